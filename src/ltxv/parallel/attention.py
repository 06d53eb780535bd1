"""Self-attention over a sequence split across ranks: attention cores for :data:`ltxv.model.attention.AttentionCore`.

Each rank holds a contiguous run of the tokens (``splits[r]`` of them, in rank order) and its q, k, v for them, RoPE
already applied (rotations are per token). Two ways to attend over the whole sequence:

* :class:`Ulysses` (DeepSpeed-Ulysses): one all-to-all turns "my tokens, all heads" into "all tokens, my heads", the
  plain attention core runs on the whole sequence for ``heads / P`` heads, and a second all-to-all brings the output
  back to "my tokens, all heads". Needs the head count divisible by the ranks. It moves ``4 (P-1)/P`` of the q/k/v/o
  activations per layer in total, so its volume stays flat as ranks are added.
* :class:`Ring` (ring attention): keys and values travel round the ranks in P - 1 hops, each rank attends its queries
  to every block as it passes (the next hop in flight meanwhile) and merges the partial results through their
  log-sum-exp, exactly as a softmax over the concatenated keys. Works for any head count; moves ``2 (P-1)`` times the
  k/v activations in total, P/2 times Ulysses' volume.

Uneven splits (a token count the ranks do not divide) are exact in both: the collectives take per-rank sizes, so no
padding token and no mask exist. Every byte a core sends to another rank is counted in :class:`CommStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ltxv.model.attention import sdpa

MODES = ("auto", "ulysses", "ring")


@dataclass
class CommStats:
    """Bytes this rank sent to other ranks (its chunk to itself is not counted) and collective calls, by kind."""

    sent: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + nbytes
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def token_splits(n: int, ranks: int) -> tuple[int, ...]:
    """How many of ``n`` tokens each rank holds: contiguous runs, the first ``n % ranks`` ranks one token more."""
    if n < ranks:
        raise ValueError(f"{n} tokens cannot be split over {ranks} ranks (each rank needs at least one)")
    return tuple(n // ranks + (r < n % ranks) for r in range(ranks))


class _Core:
    def __init__(self, group: dist.ProcessGroup, splits: Sequence[int], stats: CommStats | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if len(splits) != self.size:
            raise ValueError(f"{len(splits)} token splits for {self.size} ranks")
        self.splits = tuple(splits)
        self.stats = stats

    def _count(self, kind: str, tensors: Sequence[torch.Tensor], skip: int | None = None) -> None:
        if self.stats is not None:
            self.stats.add(kind, sum(t.numel() * t.element_size() for i, t in enumerate(tensors) if i != skip))


class Ulysses(_Core):
    """All-to-all over heads (module docstring). ``heads`` must be divisible by the group size."""

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q, k, v (B, n_r, D), this rank's tokens -> attention output (B, n_r, D) over the whole sequence."""
        if bias is not None:
            raise ValueError("sequence-parallel self-attention takes no bias (LTX-Video's self-attention has none)")
        p = self.size
        if heads % p:
            raise ValueError(f"Ulysses needs the {heads} heads divisible by the {p} ranks; use the ring")
        b, n, d = q.shape
        dl = d // p  # the channels of this rank's heads, heads * head_dim / P
        qkv = torch.stack([q, k, v])  # (3, B, n_r, D)
        send = [qkv[..., s * dl : (s + 1) * dl] for s in range(p)]  # to rank s: its heads of my tokens
        recv = self._exchange("ulysses_qkv", send, [(3, b, m, dl) for m in self.splits])
        q_all, k_all, v_all = torch.cat(recv, dim=2).unbind(0)  # (B, N, D/P) each, every token, my heads
        o = sdpa(q_all, k_all, v_all, heads // p)  # (B, N, D/P)
        starts = [sum(self.splits[:s]) for s in range(p)]
        send = [o[:, a : a + m] for a, m in zip(starts, self.splits)]  # to rank s: my heads of its tokens
        recv = self._exchange("ulysses_out", send, [(b, n, dl)] * p)
        return torch.cat(recv, dim=-1)  # (B, n_r, D), heads in rank order = the plain head order

    def _exchange(self, kind: str, send: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """One all-to-all: ``send[s]`` goes to rank s; returns what each rank sent here, shaped ``shapes[s]``."""
        flat = torch.cat([t.reshape(-1) for t in send])
        sizes = [int(torch.Size(s).numel()) for s in shapes]
        out = flat.new_empty(sum(sizes))
        dist.all_to_all_single(out, flat, sizes, [t.numel() for t in send], group=self.group)
        self._count(kind, send, skip=self.rank)
        return [c.view(s) for c, s in zip(out.split(sizes), shapes)]


class Ring(_Core):
    """Ring attention (module docstring): any head count; partial softmaxes merged in float32."""

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q, k, v (B, n_r, D), this rank's tokens -> attention output (B, n_r, D) over the whole sequence."""
        if bias is not None:
            raise ValueError("sequence-parallel self-attention takes no bias (LTX-Video's self-attention has none)")
        p, r = self.size, self.rank
        b, n, d = q.shape
        hd = d // heads
        qh = q.view(b, n, heads, hd).transpose(1, 2).float() * hd**-0.5  # (B, H, n_r, hd)
        block = torch.stack([k, v]).contiguous()  # (2, B, n_s, D): the block of rank s = r at hop 0
        out = lse = None
        for hop in range(p):
            src = (r - hop) % p  # whose keys/values ``block`` holds
            pending = None
            if hop < p - 1:  # pass this block on while attending to it
                nxt = block.new_empty(2, b, self.splits[(src - 1) % p], d)
                ops = [
                    dist.P2POp(dist.isend, block, group=self.group, group_peer=(r + 1) % p),
                    dist.P2POp(dist.irecv, nxt, group=self.group, group_peer=(r - 1) % p),
                ]
                pending = dist.batch_isend_irecv(ops)
                self._count("ring_kv", [block])
            o_blk, lse_blk = _attend_block(qh, block[0], block[1], heads)
            if out is None:
                out, lse = o_blk, lse_blk
            else:
                merged = torch.logaddexp(lse, lse_blk)
                out = out * (lse - merged).exp_() + o_blk * (lse_blk - merged).exp_()
                lse = merged
            if pending is not None:
                for work in pending:
                    work.wait()
                block = nxt
        return out.transpose(1, 2).reshape(b, n, d).to(q.dtype)  # type: ignore[union-attr]


def _attend_block(qh: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled queries (B, H, n, hd) float32 against one key/value block (B, m, D) -> the block's softmax-normalised
    output (B, H, n, hd) and its log-sum-exp (B, H, n, 1), both float32."""
    b, m, d = k.shape
    kh = k.view(b, m, heads, d // heads).transpose(1, 2).float()
    vh = v.view(b, m, heads, d // heads).transpose(1, 2).float()
    s = qh @ kh.transpose(-1, -2)  # (B, H, n, m)
    peak = s.amax(dim=-1, keepdim=True)
    w = s.sub_(peak).exp_()
    total = w.sum(dim=-1, keepdim=True)
    return (w @ vh).div_(total), peak + total.log()


def attention_core(
    group: dist.ProcessGroup, splits: Sequence[int], heads: int, mode: str = "auto", stats: CommStats | None = None
) -> Ulysses | Ring:
    """The core for ``mode``: "ulysses", "ring", or "auto" (Ulysses where the ranks divide the heads, else the ring)."""
    if mode not in MODES:
        raise ValueError(f"sequence-parallel attention must be auto, ulysses or ring, got {mode!r}")
    size = dist.get_world_size(group)
    if mode == "ulysses" or (mode == "auto" and heads % size == 0):
        return Ulysses(group, splits, stats)
    return Ring(group, splits, stats)
