"""The causal video VAE of LTX-Video (reference ``CausalVideoAutoencoder``, study §2.4), built from the checkpoint's
block-list config, so the 0.9.0, 0.9.1 and 0.9.5+ layouts are one code path.

0.9.5+: 32x spatial, 8x temporal compression to 128 channels; ``F' = 1 + (F - 1) / 8``. The encoder is causal in time
(the first frame is replicated in front), the decoder by default is not (first and last frames replicated), and its
resnets may be conditioned on a decode timestep; the 0.9.1 decoder also adds seeded spatial noise. Latents leave
``encode`` and enter ``decode`` normalised per channel with the checkpoint's statistics, as the pipelines use them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.config import ConfigError, VAEBlock, VAEConfig
from ltxv.errors import InputError
from ltxv.model.embeddings import TimestepEmbedder
from ltxv.model.vae_blocks import (
    CausalConv3d,
    DepthToSpaceUp,
    ResStack,
    SpaceToDepthDown,
    WidenBlock,
    make_norm,
    modulation,
    randn,
)
from ltxv.model.vae_stream import FrameSink, can_stream, decode_stream

_STRIDES = {"time": (2, 1, 1), "space": (1, 2, 2), "all": (2, 2, 2)}
_LOGVAR_CLAMP = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution
_AUTO_CHUNK = 1  # latent frames per streaming step by default: the smallest window, measured as fast as larger ones

logger = logging.getLogger(__name__)


def _stride(kind: str) -> tuple[int, int, int]:
    return _STRIDES[kind.split("_")[1]]  # compress_{time,space,all}[_res|_x_y]


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


def _encoder_block(b: VAEBlock, c: int, cfg: VAEConfig) -> tuple[nn.Module, int]:
    """One encoder block and its output width. The reference's encoder ignores ``inject_noise``, as we do."""
    pad, norm = cfg.spatial_padding_mode, cfg.norm_layer
    wide = c * (b.multiplier or 2)
    if b.kind == "res_x":
        return ResStack(c, b.num_layers, norm, pad, False, False), c
    if b.kind == "res_x_y":
        return WidenBlock(c, wide, norm, pad, False), wide
    if b.kind.endswith("_res"):
        return SpaceToDepthDown(c, wide, _stride(b.kind), pad), wide
    if b.kind == "compress_all_x_y":
        return CausalConv3d(c, wide, pad, _stride(b.kind)), wide
    return CausalConv3d(c, c, pad, _stride(b.kind)), c  # compress_{time,space,all}: width kept, multiplier unused


def _decoder_block(b: VAEBlock, c: int, cfg: VAEConfig) -> tuple[nn.Module, int]:
    pad, norm = cfg.spatial_padding_mode, cfg.norm_layer
    if b.kind == "res_x":
        return ResStack(c, b.num_layers, norm, pad, cfg.timestep_conditioning, b.inject_noise), c
    if b.kind == "res_x_y":
        c_out = c // (b.multiplier or 2)
        if b.inject_noise and c_out != c:
            raise ConfigError("unsupported VAE config: inject_noise on a width-changing decoder 'res_x_y'")
        return WidenBlock(c, c_out, norm, pad, b.inject_noise), c_out
    if b.kind == "compress_all":
        reduction = b.multiplier or 1
        return DepthToSpaceUp(c, _stride(b.kind), reduction, b.residual, pad), c // reduction
    if b.kind in ("compress_time", "compress_space"):  # the reference ignores residual/multiplier on these
        return DepthToSpaceUp(c, _stride(b.kind), 1, False, pad), c
    raise ConfigError(f"unsupported VAE config: decoder block {b.kind!r}")


def _check_supported(cfg: VAEConfig) -> None:
    if cfg.use_quant_conv:
        raise ConfigError("unsupported VAE config: use_quant_conv=True (quant_conv / post_quant_conv)")
    if cfg.normalize_latent_channels:
        raise ConfigError("unsupported VAE config: normalize_latent_channels=True")
    if cfg.latent_log_var == "none":
        raise ConfigError("unsupported VAE config: latent_log_var='none'")
    if cfg.norm_layer not in ("pixel_norm", "group_norm"):
        raise ConfigError(f"unsupported VAE config: norm_layer={cfg.norm_layer!r}")
    if cfg.patch_size < 1:
        raise ConfigError(f"unsupported VAE config: patch_size={cfg.patch_size}")


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
        self.conv_norm_out = make_norm(cfg.norm_layer, c)
        extra = {"per_channel": cfg.latent_channels, "uniform": 1, "constant": 1}[cfg.latent_log_var]
        self.conv_out = CausalConv3d(c, cfg.latent_channels + extra, cfg.spatial_padding_mode)
        self.log_var = cfg.latent_log_var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Video (B, 3, F, H, W) -> posterior mean (B, C, F', H', W') and log-variance, (B, C, ...) per channel or
        (B, 1, ...) when one is shared by all channels ('uniform', 'constant')."""
        x = self.conv_in(_patchify(x, self.patch_size), True)
        for block in self.down_blocks:
            x = block(x, True)
        x = self.conv_out(F.silu(self.conv_norm_out(x)), True)
        if self.log_var == "per_channel":
            mean, logvar = x.chunk(2, dim=1)
            return mean, logvar
        mean = x[:, :-1]
        if self.log_var == "constant":  # the reference replaces the predicted channel by the clamp floor
            return mean, torch.full_like(x[:, -1:], _LOGVAR_CLAMP[0])
        return mean, x[:, -1:]


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.patch_size, self.causal = cfg.patch_size, cfg.causal_decoder
        blocks = tuple(reversed(cfg.decoder_blocks))
        c = cfg.decoder_base_channels
        for b in blocks:  # the input width is the base times every block's channel multiplier
            if b.kind == "res_x_y":
                c *= b.multiplier or 2
            elif b.kind.startswith("compress"):
                c *= b.multiplier or 1
        self.conv_in = CausalConv3d(cfg.latent_channels, c, cfg.spatial_padding_mode)
        ups = []
        for b in blocks:
            block, c = _decoder_block(b, c, cfg)
            ups.append(block)
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = make_norm(cfg.norm_layer, c)
        self.conv_out = CausalConv3d(c, cfg.out_channels * cfg.patch_size**2, cfg.spatial_padding_mode)
        self.timestep_conditioning = cfg.timestep_conditioning
        if cfg.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedder(2 * c)
            self.last_scale_shift_table = nn.Parameter(torch.zeros(2, c))

    def forward(
        self, z: torch.Tensor, timestep: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw latents (B, C, F', H', W') and decode timesteps (B,) (conditioned decoders only) -> video."""
        x = self.conv_in(z, self.causal)
        t = self.scaled_timestep(timestep)
        for block in self.up_blocks:
            x = block(x, self.causal, t, generator)
        x = self.conv_norm_out(x)
        if t is not None:
            shift, scale = modulation(self.last_scale_shift_table, self.last_time_embedder(t, x.dtype))
            x = x * (1 + scale) + shift
        return self.unpatchify(self.conv_out(F.silu(x), self.causal))

    def scaled_timestep(self, timestep: torch.Tensor | None) -> torch.Tensor | None:
        """Decode timesteps (B,) -> what the resnets' embedders take (B,); None for unconditioned decoders."""
        if not self.timestep_conditioning:
            return None
        if timestep is None:
            raise ValueError("this VAE decoder is timestep-conditioned: pass a decode timestep (e.g. 0.05)")
        return timestep * self.timestep_scale_multiplier

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """conv_out's frames (B, 3*p*p, F, H, W) -> video frames (B, 3, F, H*p, W*p)."""
        return _unpatchify(x, self.patch_size)


class _Stats(nn.Module):
    """``per_channel_statistics.{mean-of-means,std-of-means}`` as buffers (their names hold dashes, as stored)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("mean-of-means", torch.zeros(c))
        self.register_buffer("std-of-means", torch.ones(c))

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
        # Set by a loader that left the encoder on the meta device: returns its state dict, read on first encode.
        self.deferred_tensors: Callable[[], dict[str, torch.Tensor]] | None = None

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
        """Raw latents -> the normalised latents the transformer sees: ``(z - mean_of_means) / std_of_means``."""
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
        c = self.cfg.in_channels
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != c:
            got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise InputError(f"vae.encode: expected a video tensor (B, {c}, F, H, W) in [-1, 1], got {got}")
        f, h, w = video.shape[2:]
        if (f - 1) % ts or h % s or w % s:
            raise InputError(f"video of {f} frames at {h}x{w}: frames must be {ts}k+1 and sizes multiples of {s}")
        if not video.is_floating_point():
            raise InputError(f"vae.encode: expected a float video in [-1, 1], got {video.dtype} (0-255: x / 127.5 - 1)")
        low, high = (float(v) for v in torch.aminmax(video.detach()))
        if not (low >= -1.0 and high <= 1.0):  # NaN fails this too
            raise InputError(f"vae.encode: video values must be finite and in [-1, 1], got [{low:g}, {high:g}]")
        if self.deferred_tensors is not None:
            self._materialize_encoder()
        video = video.to(next(self.decoder.parameters()).dtype)  # the weights' dtype (the encoder may be unread)
        mean, logvar = self.encoder(video)  # (B, C, F', H', W'), (B, C or 1, F', H', W')
        z = mean
        if generator is not None:
            std = torch.exp(0.5 * torch.clamp(logvar, *_LOGVAR_CLAMP))
            z = mean + std * randn(tuple(mean.shape), mean, generator)
        return self.normalize(z)

    def _materialize_encoder(self) -> None:
        where = self.per_channel_statistics.mean_std()[0].device  # wherever the VAE is now
        state = {k: v.to(where) for k, v in self.deferred_tensors().items()}  # type: ignore[misc]
        self.encoder.load_state_dict(state, strict=True, assign=True)
        self.encoder.requires_grad_(False)
        self.deferred_tensors = None

    def decode(
        self,
        z: torch.Tensor,
        timestep: float | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        chunk_frames: int | Literal["auto"] | None = "auto",
        sink: FrameSink | None = None,
    ) -> torch.Tensor | None:
        """Normalised latents (B, C, F', H', W') -> video (B, 3, 8(F'-1)+1, 32H', 32W') in [-1, 1] (not clamped).

        ``timestep`` (a float or (B,)) is required by timestep-conditioned decoders and ignored by the others; the
        0.9.1 decoder's noise comes from ``generator`` (the global RNG when None, as the reference).

        ``chunk_frames``: None decodes in one shot; an int streams that many latent frames per step through the
        decoder (:mod:`ltxv.model.vae_stream`): the same output, computed frame by frame with the same arithmetic,
        in a working memory of the output plus a few frames per layer instead of every layer's whole activation.
        "auto" streams one latent frame per step when the clip has more than two latent frames and the decoder can
        stream (not GroupNorm, whose statistics span all frames), and decodes in one shot otherwise.

        ``sink``: hand the video to ``sink(first_frame, frames)`` block by block as it is decoded, in frame order,
        instead of returning it (None is returned): a streamed decode then never holds the whole video."""
        c = self.cfg.latent_channels
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != c or not z.is_floating_point():
            got = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"vae.decode: expected float normalised latents (B, {c}, F, H, W), got {got}")
        z = z.to(next(self.decoder.parameters()).dtype)
        t = None
        if self.decoder.timestep_conditioning and timestep is not None:
            t = torch.as_tensor(timestep, dtype=torch.float32, device=z.device)
            t = t.expand(z.shape[0]) if t.ndim == 0 else t
        z = self.denormalize(z)
        streamable = can_stream(self.decoder)  # walks the decoder's modules: once
        if chunk_frames == "auto":
            chunk_frames = _AUTO_CHUNK if z.shape[2] > 2 and streamable else None
        elif chunk_frames is not None and not streamable:
            logger.warning("GroupNorm VAE decoder: cannot stream exactly, decoding in one shot")
            chunk_frames = None
        if chunk_frames is not None:
            return decode_stream(self.decoder, z, self.decoder.scaled_timestep(t), generator, chunk_frames, sink=sink)
        video = self.decoder(z, t, generator)
        if sink is None:
            return video
        sink(0, video)
        return None
