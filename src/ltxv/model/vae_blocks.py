"""Building blocks of the causal video VAE (reference ``causal_video_autoencoder.py``, study §2.4).

Every block takes ``(x, causal)``; decoder blocks also take the scaled decode timestep ``t`` (B,) and the generator of
the 0.9.1 noise injection. Module attribute names are the checkpoint's key names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.config import ConfigError
from ltxv.model.embeddings import TimestepEmbedder

_PIXEL_NORM_EPS = 1e-8
_NORM_EPS = 1e-6
_GROUPS = 32


def randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise in ``like``'s dtype, from ``generator`` (on its own device) or the global RNG."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def space_to_depth(x: torch.Tensor, s: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D*p1, H*p2, W*p3) -> (B, C*p1*p2*p3, D, H, W), channel order (c p1 p2 p3)."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = s
    x = x.reshape(b, c, d // p1, p1, h // p2, p2, w // p3, p3)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * p1 * p2 * p3, d // p1, h // p2, w // p3)


def depth_to_space(x: torch.Tensor, s: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = s
    c //= p1 * p2 * p3
    x = x.reshape(b, c, p1, p2, p3, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * p1, h * p2, w * p3)


class CausalConv3d(nn.Module):
    """3x3x3 conv with all of the VAE's padding logic. Spatial padding per config; temporal padding by replicating
    edge frames: causal = two copies of the first frame in front; non-causal = one copy of the first in front and
    one of the last behind. Key: ``conv.*``."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=(0, 1, 1), padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        first = x[:, :, :1]
        x = torch.cat([first, first, x], dim=2) if causal else torch.cat([first, x, x[:, :, -1:]], dim=2)
        # The reference's conv always sees a contiguous clip, and conv rounding depends on the layout: a no-op except
        # after a 0.9.0 res_x_y block, whose LayerNorm shortcut leaves its output channels-last.
        return self.conv(x.contiguous())


class PixelNorm(nn.Module):
    """RMS over channels, no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + _PIXEL_NORM_EPS)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, F, H, W); key ``norm.*`` (the 0.9.0 ``res_x_y`` shortcut)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def make_norm(kind: str, c: int) -> nn.Module:
    # GroupNorm keeps its parameters directly under norm1/norm2/conv_norm_out; PixelNorm has none.
    if kind != "group_norm":
        return PixelNorm()
    if c % _GROUPS:
        raise ConfigError(f"unsupported VAE config: group_norm ({_GROUPS} groups) on {c} channels")
    return nn.GroupNorm(_GROUPS, c, eps=_NORM_EPS)


def _modulate(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale) + shift


def modulation(table: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Learned table (K, C) plus a per-sample embedding (B, K*C) -> K tensors (B, C, 1, 1, 1)."""
    k, c = table.shape
    return (table[None, :, :, None, None, None] + emb.reshape(-1, k, c, 1, 1, 1)).unbind(dim=1)


class ResBlock(nn.Module):
    """norm -> [modulate] -> SiLU -> conv -> [+noise], twice, plus the input. When the width changes (``res_x_y``)
    the input goes through a channel LayerNorm and a 1x1x1 conv first."""

    def __init__(
        self, c_in: int, c_out: int, norm: str, padding_mode: str, timestep_conditioning: bool, inject_noise: bool
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, c_in)
        self.conv1 = CausalConv3d(c_in, c_out, padding_mode)
        self.norm2 = make_norm(norm, c_out)
        self.conv2 = CausalConv3d(c_out, c_out, padding_mode)
        self.inject_noise = inject_noise
        if inject_noise:
            # (C, 1, 1): the checkpoint's shape; sized by the input width as in the reference (equal widths only).
            self.per_channel_scale1 = nn.Parameter(torch.zeros(c_in, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(c_in, 1, 1))
        if c_in != c_out:
            self.norm3 = ChannelLayerNorm(c_in)
            self.conv_shortcut = nn.Conv3d(c_in, c_out, 1)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.zeros(4, c_in))

    def _noise(self, h: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # One (H, W) map shared by batch, frames and channels (scaled per channel): the reference's draw order/shape.
        noise = randn(tuple(h.shape[-2:]), h, generator)
        return h.add_((noise[None] * scale)[None, :, None])

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        temb: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        h = self.norm1(x)
        if temb is not None:  # temb (B, 4C): rows shift1, scale1, shift2, scale2
            shift1, scale1, shift2, scale2 = modulation(self.scale_shift_table, temb)
            h = _modulate(h, scale1, shift1)
        h = self.conv1(F.silu(h), causal)
        if self.inject_noise:
            h = self._noise(h, self.per_channel_scale1, generator)
        h = self.norm2(h)
        if temb is not None:
            h = _modulate(h, scale2, shift2)
        h = self.conv2(F.silu(h), causal)
        if self.inject_noise:
            h = self._noise(h, self.per_channel_scale2, generator)
        if hasattr(self, "conv_shortcut"):
            x = self.conv_shortcut(self.norm3(x))
        return x + h


class ResStack(nn.Module):
    """``res_x``: resnets of one width, sharing one timestep embedding (4C) when conditioned."""

    def __init__(
        self, c: int, n: int, norm: str, padding_mode: str, timestep_conditioning: bool, inject_noise: bool
    ) -> None:
        super().__init__()
        if timestep_conditioning:
            self.time_embedder = TimestepEmbedder(4 * c)
        self.res_blocks = nn.ModuleList(
            ResBlock(c, c, norm, padding_mode, timestep_conditioning, inject_noise) for _ in range(n)
        )

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        t: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        temb = self.time_embedder(t, x.dtype) if hasattr(self, "time_embedder") else None
        for block in self.res_blocks:
            x = block(x, causal, temb, generator)
        return x


class WidenBlock(ResBlock):
    """``res_x_y``: one unconditioned resnet that changes the width (0.9.0 / 0.9.1 layouts)."""

    def __init__(self, c_in: int, c_out: int, norm: str, padding_mode: str, inject_noise: bool) -> None:
        super().__init__(c_in, c_out, norm, padding_mode, False, inject_noise)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        t: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return super().forward(x, causal, None, generator)


class SpaceToDepthDown(nn.Module):
    """``compress_*_res``: conv to C_out/stride then space-to-depth, plus a space-to-depth skip averaged over groups."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        n = stride[0] * stride[1] * stride[2]
        self.stride, self.group = stride, c_in * n // c_out
        self.conv = CausalConv3d(c_in, c_out // n, padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.stride[0] == 2:  # the first frame stands alone: duplicate it so frames pair up
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = space_to_depth(x, self.stride)
        b, c, d, h, w = skip.shape
        skip = skip.reshape(b, c // self.group, self.group, d, h, w).mean(dim=2)
        return space_to_depth(self.conv(x, causal), self.stride).add_(skip)


class DepthToSpaceUp(nn.Module):
    """Decoder ``compress_*``: conv to C*stride/reduction, depth-to-space, first frame dropped when time doubles;
    optionally plus the depth-to-space of the input, channel-tiled (the residual variant)."""

    def __init__(
        self, c_in: int, stride: tuple[int, int, int], reduction: int, residual: bool, padding_mode: str
    ) -> None:
        super().__init__()
        self.stride, self.residual = stride, residual
        self.tiles = stride[0] * stride[1] * stride[2] // reduction
        self.conv = CausalConv3d(c_in, self.tiles * c_in, padding_mode)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        t: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        drop = 1 if self.stride[0] == 2 else 0  # T latent frames -> 2T - 1: the causal first frame is not doubled
        y = depth_to_space(self.conv(x, causal), self.stride)[:, :, drop:]
        if self.residual:
            # Channel tiling by broadcasting into y (its channel c' = tile * C + c) instead of materialising a repeat.
            skip = depth_to_space(x, self.stride)[:, :, drop:]
            y.unflatten(1, (self.tiles, skip.shape[1])).add_(skip.unsqueeze(1))
        return y
