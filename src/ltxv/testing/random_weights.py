"""Deterministic random weights by tensor name, independent of any module's own initialisation."""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn


def _random_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("std-of-means"):
        return 0.5 + torch.rand(shape, generator=g)
    if name.endswith("timestep_scale_multiplier"):
        return torch.full(shape, 1000.0)
    if "norm" in name and leaf == "weight" and len(shape) == 1:  # RMSNorm / GroupNorm gains near 1
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if len(shape) >= 2 and "scale_shift_table" not in name:  # weights: keep activations O(1)
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return 0.1 * torch.randn(shape, generator=g)  # biases, scale-shift tables, statistics means


def random_state_dict(module: nn.Module, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Deterministic random values for every entry of ``module.state_dict()`` (the module may live on meta)."""
    return {
        name: _random_tensor(name, tuple(t.shape), seed).to(dtype).contiguous()
        for name, t in module.state_dict().items()
    }
