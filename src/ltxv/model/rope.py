"""3-D rotary position embedding as LTX-Video uses it (reference ``precompute_freqs_cis`` / ``apply_rotary_emb``).

The rotation acts on the full model width D (before the head split), in interleaved pairs (2i, 2i+1). Of the D
channels, ``D % 6`` leading ones are left unrotated; the rest hold ``D // 6`` frequencies x 3 axes x 2 (cos, sin)
pair members, laid out frequency-major with the axes (t, y, x) interleaved. Positions are mapped to [-1, 1] by
``max_pos`` and the frequencies grow geometrically from pi/2 to theta*pi/2, so heads see increasing frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def rope_tables(
    positions: torch.Tensor,
    dim: int,
    theta: float,
    max_pos: Sequence[float],
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, 3, N) -> (cos, sin), each (B, N, dim) in ``dtype``.

    Computed in float32 whatever ``dtype`` is (the angles reach ~1.6e4 rad; bf16 would destroy them), with the
    reference's exact operation order so the tables match it bit for bit.
    """
    fractional = torch.stack([positions[:, i].to(torch.float32) / max_pos[i] for i in range(3)], dim=-1)  # (B, N, 3)
    exponents = torch.linspace(
        math.log(1, theta), math.log(theta, theta), dim // 6, device=positions.device, dtype=torch.float32
    )
    freqs = theta**exponents * math.pi / 2  # (F,)
    angles = (freqs * (fractional.unsqueeze(-1) * 2 - 1)).transpose(-1, -2).flatten(2)  # (B, N, 3F), k = 3j + axis
    cos = angles.cos().repeat_interleave(2, dim=-1)  # (B, N, 6F)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    pad = dim % 6
    if pad:
        cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)  # (B, N, D)
        sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return cos.to(dtype), sin.to(dtype)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """The sin table with the rotation's sign folded in (even channels negated), for :func:`apply_rope_`."""
    out = sin.clone()
    out[..., 0::2].neg_()
    return out


def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` in place on x, with one temporary instead of four, bit-identical to it: ``rot(x) * sin``
    equals ``swap(x) * signed_sin(sin)`` exactly (only signs move), and the sum is taken in the same order.

    While autograd records (training), the same arithmetic runs out of place and x is left as it was: backward
    needs it. Use the returned tensor."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (B, N, D): pairs (x[2i+1], x[2i]), a copy
    if torch.is_grad_enabled():
        return x * cos + swapped * sin_signed
    return x.mul_(cos).add_(swapped.mul_(sin_signed))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (2i, 2i+1) of x (B, N, D) by the tables' angle: ``x * cos + rot(x) * sin`` with
    ``rot(x)[2i] = -x[2i+1]``, ``rot(x)[2i+1] = x[2i]``."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, N, D/2) each
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)  # (B, N, D)
    return x * cos + rotated * sin
