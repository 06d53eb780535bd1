"""Multi-head attention of the LTX-Video transformer (reference ``Attention`` + ``AttnProcessor2_0``).

QK-norm is an RMSNorm over the full width D (not per head) with a learned gain, and RoPE is applied to q and k on the
full D vector before the head split. Parameter names match the official checkpoint (``to_q``, ``to_out.0``,
``q_norm``...).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.model.rope import apply_rope_


class SkipLayerStrategy(enum.Enum):
    """How spatio-temporal guidance (STG) perturbs a sample in a block (see :class:`ltxv.model.transformer.Transformer`)."""

    ATTENTION_VALUES = "attention_values"
    ATTENTION_SKIP = "attention_skip"
    RESIDUAL = "residual"
    TRANSFORMER_BLOCK = "transformer_block"


def rms_norm(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' ``RMSNorm``: normalise in float32, round to x's dtype, then apply the gain in that dtype.

    ``F.rms_norm`` without a weight is bit-identical to diffusers' formula; the gain is applied after the rounding
    (not fused) because that is where the reference rounds in bf16."""
    y = F.rms_norm(x, (x.shape[-1],), eps=eps)
    if weight is None:
        return y
    return y * weight if torch.is_grad_enabled() else y.mul_(weight)  # in place unless autograd records


# The attention core: q (B, N, D), k and v (B, L, D), heads, additive bias or None -> (B, N, D). The one seam where
# sequence parallelism (:mod:`ltxv.parallel.attention`) makes self-attention whole over tokens held by other ranks.
AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """The plain attention core: q (B, N, D), k and v (B, L, D) split into ``heads`` -> (B, N, D), a view of torch's
    (B, N, H, hd) output. ``bias`` broadcastable to (B, heads, N, L)."""
    b, n, d = q.shape
    hd = d // heads
    o = F.scaled_dot_product_attention(
        q.view(b, n, heads, hd).transpose(1, 2),  # (B, H, N, hd)
        k.view(b, -1, heads, hd).transpose(1, 2),
        v.view(b, -1, heads, hd).transpose(1, 2),
        attn_mask=bias,
    )
    return o.transpose(1, 2).reshape(b, n, d)  # a view: torch's CPU kernel writes (B, N, H, hd)


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain (the attention's q/k norm); the key is ``weight`` as in the checkpoint."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.eps, self.weight)


class Attention(nn.Module):
    """Self-attention (``context`` None, optional RoPE) or cross-attention (keys/values from ``context``)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        context_dim: int | None = None,
        bias: bool = True,
        out_bias: bool = True,
        qk_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        kv_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, dim, bias=bias)
        self.to_out = nn.ModuleList(
            [nn.Linear(dim, dim, bias=out_bias)]
        )  # key "to_out.0" (the reference's [1] is dropout)
        self.q_norm = RMSNorm(dim, qk_norm_eps)
        self.k_norm = RMSNorm(dim, qk_norm_eps)

    def key_value(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (normalised) and values of ``source`` (B, L, D'), each (B, L, D). For cross-attention they depend only
        on the text, so a pass computes them once (:meth:`ltxv.model.transformer.Transformer.prepare_text`)."""
        return self.k_norm(self.to_k(source)), self.to_v(source)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
        skip_mask: torch.Tensor | None = None,
        skip_strategy: SkipLayerStrategy | None = None,
        core: AttentionCore | None = None,
    ) -> torch.Tensor:
        """x (B, N, D), context (B, L, D') or its precomputed ``kv`` = :meth:`key_value` -> (B, N, D).

        ``rope``: (cos, signed sin) tables (B or 1, N, D), see :func:`ltxv.model.rope.apply_rope_`.
        ``bias``: additive attention bias broadcastable to (B, heads, N, L), e.g. (B, 1, 1, L).
        ``skip_mask`` (B, 1, 1), 1 = normal, 0 = perturbed; with ``ATTENTION_VALUES`` a perturbed sample's attention
        output becomes V (an identity attention map), with ``ATTENTION_SKIP`` it becomes the attention input x; both
        before ``to_out``, blended as ``m * normal + (1 - m) * perturbed`` exactly like the reference. Other
        strategies are applied by the block, not here. ``core``: the attention of q, k, v (default :func:`sdpa`).
        """
        if rope is not None and kv is not None:
            raise ValueError("RoPE rotates the keys in place: it cannot be combined with precomputed `kv`")
        q = self.q_norm(self.to_q(x))  # (B, N, D)
        k, v = self.key_value(x if context is None else context) if kv is None else kv  # (B, L, D) each
        if rope is not None:  # in place: q and k are fresh here (rope only ever applies to self-attention)
            q, k = apply_rope_(q, *rope), apply_rope_(k, *rope)
        o = (core or sdpa)(q, k, v, self.heads, bias)  # (B, N, D)
        if skip_mask is not None:
            if skip_strategy is SkipLayerStrategy.ATTENTION_VALUES:
                o = o * skip_mask + v * (1.0 - skip_mask)
            elif skip_strategy is SkipLayerStrategy.ATTENTION_SKIP:
                o = o * skip_mask + x * (1.0 - skip_mask)
        return self.to_out[0](o)
