"""Sequence parallelism as the denoiser's transformer call (:data:`ltxv.pipelines.denoise.CallTransformer`).

Every rank runs the same pipeline on the same request (text, conditioning, sampler, decode: identical inputs, so
identical results, and no communication). Only the transformer call is split: each rank takes its contiguous run of
the tokens with their per-token timesteps and RoPE rows, runs ``embed -> run_blocks -> head`` on them with a
sequence-parallel self-attention core (:mod:`ltxv.parallel.attention`), and the velocity of every token is
all-gathered, so every rank leaves the call with the whole velocity, as a plain call would.

That contract is what lets other call wrappers compose: a step cache wraps whatever call it is given, and given this
one it sees the same inputs and outputs on every rank, so its (deterministic) decisions agree across ranks and no
rank skips a collective the others enter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from ltxv.parallel.attention import MODES, CommStats, attention_core, token_splits

if TYPE_CHECKING:  # the pipelines import this module (not the reverse at run time)
    from ltxv.pipelines.denoise import TransformerCall


class SequenceParallel:
    """A :data:`~ltxv.pipelines.denoise.CallTransformer` that splits the tokens over ``group``.

    ``mode``: the self-attention exchange, "auto" (Ulysses where the ranks divide the heads, else the ring),
    "ulysses" or "ring". Token counts the ranks do not divide are split unevenly (the first ``N % P`` ranks hold one
    token more) rather than padded: the collectives take per-rank sizes, so there is no padding token to mask and
    the attention is over exactly the real tokens, as in one process. ``stats`` counts the bytes sent."""

    def __init__(self, group: dist.ProcessGroup, *, mode: str = "auto", stats: CommStats | None = None) -> None:
        if mode not in MODES:  # now, not at the first step
            raise ValueError(f"sequence-parallel attention must be one of {', '.join(MODES)}, got {mode!r}")
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.mode = mode
        self.stats = stats if stats is not None else CommStats()

    def __call__(self, call: TransformerCall) -> torch.Tensor:
        m = call.model
        n = call.tokens.shape[1]
        splits = token_splits(n, self.size)
        start = sum(splits[: self.rank])
        mine = slice(start, start + splits[self.rank])
        tokens = call.tokens[:, mine]  # (nB, n_r, C_in)
        t = call.timesteps if call.timesteps.shape[1] == 1 else call.timesteps[:, mine]  # (nB, 1) or (nB, n_r)
        rope = (call.rope[0][:, mine], call.rope[1][:, mine])  # (nB or 1, n_r, D) each
        core = attention_core(self.group, splits, m.cfg.num_attention_heads, self.mode, self.stats)
        x, modulation, embedded = m.embed(tokens, t)
        skips = m.skip_masks(call.skip_mask, tokens.shape[0], x.dtype)
        x = m.run_blocks(x, call.text, modulation, rope, skips, call.skip_strategy, attend=core)
        return self.gather(m.head(x, embedded), splits)  # (nB, N, C_out)

    def gather(self, local: torch.Tensor, splits: tuple[int, ...]) -> torch.Tensor:
        """This rank's velocity (B, n_r, C) -> every token's (B, N, C) on every rank. The all-gather takes equal
        sizes, so each rank's rows are padded to the largest split (at most one token) and trimmed after."""
        b, n, c = local.shape
        longest = max(splits)
        padded = local if n == longest else torch.cat([local, local.new_zeros(b, longest - n, c)], dim=1)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded.contiguous(), group=self.group)
        self.stats.add("gather", padded.numel() * padded.element_size() * (self.size - 1))
        return torch.cat([p[:, :s] for p, s in zip(parts, splits)], dim=1)
