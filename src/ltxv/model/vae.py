"""The causal video VAE of LTX-Video 0.9.5 .. 0.9.8 (reference ``CausalVideoAutoencoder``, study §2.4).

32x spatial, 8x temporal compression to 128 channels; ``F' = 1 + (F - 1) / 8``. The encoder is causal in time (the
first frame is replicated in front), the decoder by default is not (first and last frames replicated), and its blocks
are conditioned on a decode timestep. Latents leave ``encode`` and enter ``decode`` normalised per channel with the
checkpoint's statistics, as the pipelines use them.

Only the 0.9.5+ block vocabulary is built; the 0.9.0 / 0.9.1 layouts (``res_x_y`` width changes, spatial noise
injection) raise ``ConfigError("unsupported VAE version ...")`` at construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.config import ConfigError, VAEBlock, VAEConfig
from ltxv.model.transformer import _TimestepEmbedder, timestep_sinusoids

_STRIDES = {"time": (2, 1, 1), "space": (1, 2, 2), "all": (2, 2, 2)}
_PIXEL_NORM_EPS = 1e-8


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + _PIXEL_NORM_EPS)


def _space_to_depth(x: torch.Tensor, s: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D*p1, H*p2, W*p3) -> (B, C*p1*p2*p3, D, H, W), channel order (c p1 p2 p3)."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = s
    x = x.reshape(b, c, d // p1, p1, h // p2, p2, w // p3, p3)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * p1 * p2 * p3, d // p1, h // p2, w // p3)


def _depth_to_space(x: torch.Tensor, s: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of :func:`_space_to_depth`."""
    b, c, d, h, w = x.shape
    p1, p2, p3 = s
    c //= p1 * p2 * p3
    x = x.reshape(b, c, p1, p2, p3, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, d * p1, h * p2, w * p3)


class CausalConv3d(nn.Module):
    """3x3x3 conv, spatial padding per config, temporal padding by replicating edge frames: causal = two copies of
    the first frame in front; non-causal = one copy of the first in front and of the last behind. Key: ``conv.*``."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=(0, 1, 1), padding_mode=padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        first = x[:, :, :1]
        x = torch.cat([first, first, x], dim=2) if causal else torch.cat([first, x, x[:, :, -1:]], dim=2)
        return self.conv(x)


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm keeps its parameters directly under norm1/norm2 in the checkpoint; PixelNorm has none.
    return nn.GroupNorm(32, channels, eps=1e-6) if kind == "group_norm" else _PixelNorm()


class _PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pixel_norm(x)


class ResBlock(nn.Module):
    """norm -> [modulate] -> SiLU -> conv, twice, plus the identity (width never changes in 0.9.5+)."""

    def __init__(self, c: int, norm: str, padding_mode: str, timestep_conditioning: bool) -> None:
        super().__init__()
        self.norm1 = _norm(norm, c)
        self.conv1 = CausalConv3d(c, c, padding_mode)
        self.norm2 = _norm(norm, c)
        self.conv2 = CausalConv3d(c, c, padding_mode)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.empty(4, c))

    def forward(self, x: torch.Tensor, causal: bool, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        if temb is not None:  # temb (B, 4C): rows shift1, scale1, shift2, scale2
            b, c = x.shape[:2]
            ada = self.scale_shift_table[None, :, :, None, None, None] + temb.reshape(b, 4, c, 1, 1, 1)
            shift1, scale1, shift2, scale2 = ada.unbind(dim=1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h), causal)
        h = self.norm2(h)
        if temb is not None:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h), causal)
        return x + h


class ResStack(nn.Module):
    """``res_x``: resnets sharing one timestep embedding (4C) when conditioned."""

    def __init__(self, c: int, n: int, norm: str, padding_mode: str, timestep_conditioning: bool) -> None:
        super().__init__()
        if timestep_conditioning:
            self.time_embedder = _TimestepEmbedder(4 * c)
        self.res_blocks = nn.ModuleList(ResBlock(c, norm, padding_mode, timestep_conditioning) for _ in range(n))

    def forward(self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None) -> torch.Tensor:
        temb = None
        if t is not None and hasattr(self, "time_embedder"):
            temb = self.time_embedder.timestep_embedder(timestep_sinusoids(t.flatten()).to(x.dtype))
        for block in self.res_blocks:
            x = block(x, causal, temb)
        return x


class SpaceToDepthDown(nn.Module):
    """``compress_*_res``: conv to C_out/stride then space-to-depth, plus a space-to-depth skip averaged over groups."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        n = stride[0] * stride[1] * stride[2]
        self.stride, self.group = stride, c_in * n // c_out
        self.conv = CausalConv3d(c_in, c_out // n, padding_mode)

    def forward(self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.stride[0] == 2:  # the first frame stands alone: duplicate it so frames pair up
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = _space_to_depth(x, self.stride)
        b, c, d, h, w = skip.shape
        skip = skip.reshape(b, c // self.group, self.group, d, h, w).mean(dim=2)
        return _space_to_depth(self.conv(x, causal), self.stride) + skip


class StridedDown(nn.Module):
    """Encoder ``compress_time/space/all``: a strided causal conv."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        self.conv = CausalConv3d(c_in, c_out, padding_mode, stride)

    def forward(self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x, causal)


class DepthToSpaceUp(nn.Module):
    """Decoder ``compress_*``: conv to C*stride/reduction, depth-to-space, first frame dropped when time doubles;
    optionally plus the depth-to-space of the input, channel-tiled (the residual variant)."""

    def __init__(
        self, c_in: int, stride: tuple[int, int, int], reduction: int, residual: bool, padding_mode: str
    ) -> None:
        super().__init__()
        self.stride, self.residual = stride, residual
        self.n = stride[0] * stride[1] * stride[2]
        self.reduction = reduction
        self.conv = CausalConv3d(c_in, self.n * c_in // reduction, padding_mode)

    def forward(self, x: torch.Tensor, causal: bool, t: torch.Tensor | None = None) -> torch.Tensor:
        drop = 1 if self.stride[0] == 2 else 0
        y = _depth_to_space(self.conv(x, causal), self.stride)[:, :, drop:]
        if self.residual:
            y = y + _depth_to_space(x, self.stride).repeat(1, self.n // self.reduction, 1, 1, 1)[:, :, drop:]
        return y


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, F, H*p, W*p) -> (B, C*p*p, F, H, W) with channel order (c, w-offset, h-offset), as the reference."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, f, h // p, w // p)


def _unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, cpp, f, h, w = x.shape
    c = cpp // (p * p)
    x = x.reshape(b, c, p, p, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)  # (b, c, f, h, q, w, r)
    return x.reshape(b, c, f, h * p, w * p)


def _check_supported(cfg: VAEConfig) -> None:
    for b in (*cfg.encoder_blocks, *cfg.decoder_blocks):
        if b.kind in ("res_x_y", "compress_all_x_y") or b.inject_noise:
            raise ConfigError(
                f"unsupported VAE version: block {b.kind!r}{' with inject_noise' if b.inject_noise else ''} belongs to "
                "the 0.9.0/0.9.1 VAE layouts; ltxv loads the 0.9.5+ VAE (used by 0.9.5 .. 0.9.8 checkpoints)"
            )
    if cfg.use_quant_conv or cfg.normalize_latent_channels:
        raise ConfigError("unsupported VAE version: use_quant_conv / normalize_latent_channels are not implemented")
    if cfg.latent_log_var == "none":
        raise ConfigError("unsupported VAE config: latent_log_var='none'")
    if cfg.patch_size < 1:
        raise ConfigError(f"vae config: patch_size={cfg.patch_size}")


def _encoder_block(b: VAEBlock, c: int, cfg: VAEConfig) -> tuple[nn.Module, int]:
    pad = cfg.spatial_padding_mode
    if b.kind == "res_x":
        return ResStack(c, b.num_layers, cfg.norm_layer, pad, False), c
    stride = _STRIDES[b.kind.split("_")[1]]  # compress_{time,space,all}[_res]
    if b.kind.endswith("_res"):
        c_out = c * (b.multiplier or 2)
        return SpaceToDepthDown(c, c_out, stride, pad), c_out
    return StridedDown(c, c, stride, pad), c


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        c = cfg.encoder_base_channels
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, c, cfg.spatial_padding_mode)
        blocks = []
        for b in cfg.encoder_blocks:
            block, c = _encoder_block(b, c, cfg)
            blocks.append(block)
        self.down_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = _norm(cfg.norm_layer, c)
        extra = {"per_channel": cfg.latent_channels, "uniform": 1, "constant": 1}[cfg.latent_log_var]
        self.conv_out = CausalConv3d(c, cfg.latent_channels + extra, cfg.spatial_padding_mode)
        self.log_var = cfg.latent_log_var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Video (B, 3, F, H, W) -> posterior (mean, logvar), each (B, C, F', H', W')."""
        x = self.conv_in(_patchify(x, self.patch_size), True)
        for block in self.down_blocks:
            x = block(x, True)
        x = self.conv_out(F.silu(self.conv_norm_out(x)), True)
        if self.log_var == "per_channel":
            mean, logvar = x.chunk(2, dim=1)
        else:
            mean = x[:, :-1]
            logvar = x[:, -1:].expand_as(mean)
            if self.log_var == "constant":
                logvar = torch.full_like(mean, -30.0)
        return mean, logvar


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.patch_size, self.causal = cfg.patch_size, cfg.causal_decoder
        pad, cond = cfg.spatial_padding_mode, cfg.timestep_conditioning
        blocks = tuple(reversed(cfg.decoder_blocks))
        c = cfg.decoder_base_channels
        for b in blocks:
            if b.kind.startswith("compress"):
                c *= b.multiplier or 1
        self.conv_in = CausalConv3d(cfg.latent_channels, c, pad)
        ups: list[nn.Module] = []
        for b in blocks:
            if b.kind == "res_x":
                ups.append(ResStack(c, b.num_layers, cfg.norm_layer, pad, cond))
            elif b.kind in ("compress_time", "compress_space", "compress_all"):
                reduction = b.multiplier or 1
                ups.append(DepthToSpaceUp(c, _STRIDES[b.kind.split("_")[1]], reduction, b.residual, pad))
                c //= reduction
            else:
                raise ConfigError(f"unsupported VAE config: decoder block {b.kind!r}")
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = _norm(cfg.norm_layer, c)
        self.conv_out = CausalConv3d(c, cfg.out_channels * cfg.patch_size**2, pad)
        self.timestep_conditioning = cond
        if cond:
            self.timestep_scale_multiplier = nn.Parameter(torch.empty(()))
            self.last_time_embedder = _TimestepEmbedder(2 * c)
            self.last_scale_shift_table = nn.Parameter(torch.empty(2, c))

    def forward(self, z: torch.Tensor, timestep: torch.Tensor | None) -> torch.Tensor:
        x = self.conv_in(z, self.causal)
        t = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("this VAE decoder is timestep-conditioned: pass a decode timestep (e.g. 0.05)")
            t = timestep * self.timestep_scale_multiplier  # (B,)
        for block in self.up_blocks:
            x = block(x, self.causal, t)
        x = self.conv_norm_out(x)
        if t is not None:
            b, c = x.shape[:2]
            emb = self.last_time_embedder.timestep_embedder(timestep_sinusoids(t.flatten()).to(x.dtype))
            shift, scale = (
                self.last_scale_shift_table[None, :, :, None, None, None] + emb.reshape(b, 2, c, 1, 1, 1)
            ).unbind(1)
            x = x * (1 + scale) + shift
        return _unpatchify(self.conv_out(F.silu(x), self.causal), self.patch_size)


class _Stats(nn.Module):
    """``per_channel_statistics.{mean-of-means,std-of-means}`` as buffers (their names hold dashes, as stored)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("mean-of-means", torch.empty(c))
        self.register_buffer("std-of-means", torch.empty(c))

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, "mean-of-means"), getattr(self, "std-of-means")


class VideoVAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        _check_supported(cfg)
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.per_channel_statistics = _Stats(cfg.latent_channels)

    @property
    def spatial_compression(self) -> int:
        return self.cfg.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.cfg.temporal_compression

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.per_channel_statistics.mean_std()
        return mean.to(like.dtype).view(1, -1, 1, 1, 1), std.to(like.dtype).view(1, -1, 1, 1, 1)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video (B, 3, F, H, W) in [-1, 1], F = 8k+1, H and W multiples of 32 -> normalised latents.

        The posterior mean without a generator; a posterior sample drawn from ``generator`` otherwise (the reference
        samples with the global RNG: same shape, dtype and order of draws, so a generator seeded like it matches)."""
        s, ts = self.spatial_compression, self.temporal_compression
        if video.ndim != 5 or video.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected video (B, {self.cfg.in_channels}, F, H, W), got {tuple(video.shape)}")
        f, h, w = video.shape[2:]
        if (f - 1) % ts or h % s or w % s:
            raise ValueError(f"video of {f} frames at {h}x{w}: frames must be {ts}k+1 and sizes multiples of {s}")
        mean, logvar = self.encoder(video)
        z = mean
        if generator is not None:
            std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
            z = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.normalize(z)

    def decode(
        self, z: torch.Tensor, timestep: float | torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Normalised latents (B, C, F', H', W') -> video (B, 3, 8(F'-1)+1, 32H', 32W') in [-1, 1] (not clamped).
        ``timestep`` (a float or (B,)) conditions 0.9.5+ decoders and is ignored by the others."""
        t = None
        if self.decoder.timestep_conditioning:
            t = torch.as_tensor(0.0 if timestep is None else timestep, dtype=torch.float32, device=z.device)
            t = t.expand(z.shape[0]) if t.ndim == 0 else t
        return self.decoder(self.denormalize(z), t)
