"""The latent upsampler (reference ``latent_upsampler.py``): a small conv net that doubles the latent grid.

The network itself works on *raw* (un-normalised) VAE latents. The multi-scale pipeline feeds it normalised latents, so
:class:`LatentUpsampler` can carry the VAE's per-channel statistics (``set_latent_statistics``) and then maps normalised
latents to normalised latents; the statistics are non-persistent buffers, so the state dict stays the official one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.config import UpsamplerConfig
from ltxv.errors import InputError


class _ResBlock(nn.Module):
    def __init__(self, channels: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv1 = conv(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = conv(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.silu(y + x)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = x.shape  # (B, C, F, H, W) -> (B*F, C, H, W)
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def _batch_to_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    bf, c, h, w = x.shape  # (B*F, C, H, W) -> (B, C, F, H, W)
    return x.reshape(b, bf // b, c, h, w).transpose(1, 2)


class LatentUpsampler(nn.Module):
    """Spatial x2 (Conv2d per frame + pixel shuffle), temporal x2 (Conv3d + shuffle over time, first frame dropped) or
    both (Conv3d + 3-D shuffle), between two stacks of GroupNorm res-blocks."""

    def __init__(self, cfg: UpsamplerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, m, dims = cfg.in_channels, cfg.mid_channels, cfg.dims
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.initial_conv = conv(c, m, kernel_size=3, padding=1)
        self.initial_norm = nn.GroupNorm(32, m)
        self.res_blocks = nn.ModuleList(_ResBlock(m, dims) for _ in range(cfg.num_blocks_per_stage))
        if cfg.spatial_upsample and cfg.temporal_upsample:
            up: nn.Module = nn.Conv3d(m, 8 * m, kernel_size=3, padding=1)
        elif cfg.spatial_upsample:
            up = nn.Conv2d(m, 4 * m, kernel_size=3, padding=1)
        else:
            up = nn.Conv3d(m, 2 * m, kernel_size=3, padding=1)
        self.upsampler = nn.Sequential(up)  # key names: upsampler.0.*
        self.post_upsample_res_blocks = nn.ModuleList(_ResBlock(m, dims) for _ in range(cfg.num_blocks_per_stage))
        self.final_conv = conv(m, c, kernel_size=3, padding=1)
        self.register_buffer("latent_mean", None, persistent=False)
        self.register_buffer("latent_std", None, persistent=False)

    def set_latent_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Make ``forward`` take and return normalised latents (the VAE's per-channel mean/std, shape (C,))."""
        self.latent_mean = mean.detach().clone().reshape(1, -1, 1, 1, 1)
        self.latent_std = std.detach().clone().reshape(1, -1, 1, 1, 1)

    @property
    def spatial_factor(self) -> int:
        return 2 if self.cfg.spatial_upsample else 1

    @property
    def temporal_factor(self) -> int:
        return 2 if self.cfg.temporal_upsample else 1

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> (B, C, F', H*s, W*s); F' = 2F-1 for the temporal variants. Normalised in and out when the
        latent statistics are set, raw otherwise. Computed in the weights' dtype, returned in the input's (the
        pipeline's latents are float32 after the first step, the weights may be bfloat16)."""
        c = self.cfg.in_channels
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != c:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"upsampler: expected latents (B, {c}, F, H, W), got {got}")
        if not latents.is_floating_point():
            raise InputError(f"upsampler: expected float latents, got {latents.dtype}")
        # GroupNorm(32) needs two values per group: per frame (2-D) or over the clip (3-D), times the group's channels.
        values = (
            self.cfg.mid_channels
            // 32
            * latents.shape[3]
            * latents.shape[4]
            * (1 if self.cfg.dims == 2 else latents.shape[2])
        )
        if values < 2:
            raise InputError(f"upsampler: a latent grid of {tuple(latents.shape[2:])} is too small to normalise")
        if self.latent_mean is not None:
            mean, std = self.latent_mean.to(latents.dtype), self.latent_std.to(latents.dtype)
            return (self.upsample_raw(latents * std + mean) - mean) / std
        return self.upsample_raw(latents)

    def upsample_raw(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        per_frame = self.cfg.dims == 2
        x = (_frames_to_batch(z) if per_frame else z).to(self.initial_conv.weight.dtype)
        x = F.silu(self.initial_norm(self.initial_conv(x)))
        for block in self.res_blocks:
            x = block(x)
        x = self._upsample(x, b, per_frame)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x).to(z.dtype)
        return _batch_to_frames(x, b) if per_frame else x

    def _upsample(self, x: torch.Tensor, b: int, per_frame: bool) -> torch.Tensor:
        conv = self.upsampler[0]
        if self.cfg.spatial_upsample and not self.cfg.temporal_upsample:
            # A 2-D conv over each frame, then (c p1 p2) h w -> c (h p1) (w p2): exactly F.pixel_shuffle's channel order.
            y = x if per_frame else _frames_to_batch(x)
            y = F.pixel_shuffle(conv(y), 2)
            return y if per_frame else _batch_to_frames(y, b)
        y = conv(x)
        n, c8, f, h, w = y.shape
        if self.cfg.spatial_upsample:  # 3-D shuffle: (c p1 p2 p3) d h w -> c (d p1) (h p2) (w p3)
            c = c8 // 8
            y = y.reshape(n, c, 2, 2, 2, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(n, c, 2 * f, 2 * h, 2 * w)
        else:  # time-only shuffle: (c p1) f h w -> c (f p1) h w
            c = c8 // 2
            y = y.reshape(n, c, 2, f, h, w).permute(0, 1, 3, 2, 4, 5).reshape(n, c, 2 * f, h, w)
        # The first output frame duplicates the causal first latent frame; the reference drops it (2F -> 2F-1).
        return y[:, :, 1:]
