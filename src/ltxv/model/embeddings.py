"""Embedding layers shared by the transformer and the VAE decoder (diffusers' ``Timesteps`` + ``TimestepEmbedding``
and ``PixArtAlphaTextProjection``, with their checkpoint key names)."""

from __future__ import annotations

import math

import torch
from torch import nn

TIMESTEP_CHANNELS = 256


def timestep_sinusoids(t: torch.Tensor, channels: int = TIMESTEP_CHANNELS) -> torch.Tensor:
    """(M,) scaled timesteps -> (M, channels) float32 ``[cos(t w_k), sin(t w_k)]``, ``w_k = 10000^(-k/(channels/2))``
    (diffusers ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)``, same operation order)."""
    half = channels // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * freqs[None]  # (M, half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TwoLayerMLP(nn.Module):
    """``linear_2(act(linear_1(x)))``; the key names of diffusers' ``TimestepEmbedding`` / ``PixArtAlphaTextProjection``."""

    def __init__(self, d_in: int, d: int, act: nn.Module) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d)
        self.act = act
        self.linear_2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """sinusoids(256) -> Linear -> SiLU -> Linear; key names ``timestep_embedder.linear_{1,2}``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.timestep_embedder = TwoLayerMLP(TIMESTEP_CHANNELS, d, nn.SiLU())

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(M,) or (M, 1) scaled timesteps -> (M, d)."""
        return self.timestep_embedder(timestep_sinusoids(t.flatten()).to(dtype))
