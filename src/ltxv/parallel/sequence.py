"""Sequence parallelism as the denoiser's transformer call (:data:`ltxv.pipelines.denoise.CallTransformer`).

Every rank runs the same pipeline on the same request (text, conditioning, sampler, decode: identical inputs, so
identical results, and no communication). Only the transformer call is split: each rank takes its contiguous run of
the tokens with their per-token timesteps and RoPE rows, runs ``embed -> run_blocks -> head`` on them with a
sequence-parallel self-attention core (:mod:`ltxv.parallel.attention`), and the velocity of every token is
all-gathered, so every rank leaves the call with the whole velocity, as a plain call would.

Step caching composes either way round:

* inside (``SequenceParallel(group, inner=cache)``, the efficient order): the cache gets this rank's shard as its
  call, whose ``model`` is the network with the split attention core (:class:`SplitModel`), so the blocks it runs
  itself (``embed / run_blocks / head``) are split too; a decision from data must be the same on every rank, so a
  cache reduces its statistics with :meth:`SequenceParallel.reduce_sum` (the sum over the ranks of per-rank sums is
  the whole sequence's sum).
* outside (a cache whose ``inner`` is this call): it sees the same inputs and the whole velocity on every rank, so
  its deterministic decisions agree; but blocks it runs itself run unsplit on every rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from ltxv.parallel.attention import MODES, CommStats, attention_core, token_splits

if TYPE_CHECKING:  # the pipelines import this module (not the reverse at run time)
    from ltxv.model.attention import AttentionCore
    from ltxv.model.transformer import Transformer
    from ltxv.pipelines.denoise import TransformerCall


class SplitModel:
    """The transformer as one rank of a split call sees it: every attribute is the network's, but ``run_blocks``
    (and so the forward) uses the sequence-parallel attention core. Tokens, timesteps and RoPE given to it are this
    rank's; the network itself is not changed."""

    def __init__(self, model: Transformer, core: AttentionCore) -> None:
        self.model, self.core = model, core

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def run_blocks(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model.run_blocks(*args, attend=self.core, **kwargs)

    def __call__(
        self,
        tokens: torch.Tensor,
        positions: None,
        timesteps: torch.Tensor,
        text: Any,
        *,
        rope: tuple[torch.Tensor, torch.Tensor],
        skip_layer_mask: torch.Tensor | None = None,
        skip_layer_strategy: Any = None,
    ) -> torch.Tensor:
        """The forward as :meth:`TransformerCall.run` calls it, on this rank's tokens (prepared text, RoPE given)."""
        m = self.model
        x, modulation, embedded = m.embed(tokens, timesteps)
        skips = m.skip_masks(skip_layer_mask, tokens.shape[0], x.dtype)
        x = self.run_blocks(x, text, modulation, rope, skips, skip_layer_strategy)
        return m.head(x, embedded)


class SequenceParallel:
    """A :data:`~ltxv.pipelines.denoise.CallTransformer` that splits the tokens over ``group``.

    ``mode``: the self-attention exchange, "auto" (Ulysses where the ranks divide the heads, else the ring),
    "ulysses" or "ring". Token counts the ranks do not divide are split unevenly (the first ``N % P`` ranks hold one
    token more) rather than padded: the collectives take per-rank sizes, so there is no padding token to mask and
    the attention is over exactly the real tokens, as in one process. ``stats`` counts the bytes sent. ``inner``:
    the call that runs this rank's shard (default the plain call; a step cache, see the module docstring)."""

    def __init__(
        self,
        group: dist.ProcessGroup,
        *,
        mode: str = "auto",
        stats: CommStats | None = None,
        inner: Callable[[TransformerCall], torch.Tensor] | None = None,
    ) -> None:
        if mode not in MODES:  # now, not at the first step
            raise ValueError(f"sequence-parallel attention must be one of {', '.join(MODES)}, got {mode!r}")
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.mode = mode
        self.stats = stats if stats is not None else CommStats()
        self.inner = inner

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
        shard = dataclasses.replace(call, model=SplitModel(m, core), tokens=tokens, timesteps=t, rope=rope)
        local = shard.run() if self.inner is None else self.inner(shard)  # (nB, n_r, C_out)
        return self.gather(local, splits)  # (nB, N, C_out)

    def __getattr__(self, name: str) -> Any:
        """What the inner call offers (a step cache's ``report``) is passed on."""
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks (a copy; every rank gets the same): for statistics a caller decides on."""
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

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
