"""Operations on whole latent videos (B, C, F, H, W): AdaIN after latent upsampling, and the decode stage's noise
and tone mapping (study §4.8-4.10)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def adain(latents: torch.Tensor, reference: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """Give each (sample, channel) of ``latents`` the mean and unbiased std of the same (sample, channel) of
    ``reference``, then blend: ``lerp(latents, matched, factor)``. The shapes may differ past dim 1 (the multi-scale
    recipe matches the upsampled latents to the low-resolution ones)."""
    if latents.shape[:2] != reference.shape[:2]:
        raise ValueError(f"adain: batch/channels differ, {tuple(latents.shape[:2])} vs {tuple(reference.shape[:2])}")
    r_std, r_mean = torch.std_mean(reference.flatten(2), dim=2, keepdim=True)  # (B, C, 1)
    x = latents.flatten(2)  # (B, C, M)
    i_std, i_mean = torch.std_mean(x, dim=2, keepdim=True)
    matched = ((x - i_mean) / i_std * r_std + r_mean).reshape(latents.shape)
    return torch.lerp(latents, matched, factor)


def tone_map(latents: torch.Tensor, compression: float) -> torch.Tensor:
    """Softly compress large latent values: ``x (1 - 0.8 s sigmoid(4 s (|x| - 1)))`` with ``s = 0.75 compression``.

    ``compression`` in [0, 1]; 0 is the identity (the 13B distilled second pass uses 0.6)."""
    if not 0.0 <= compression <= 1.0:
        raise ValueError(f"tone-map compression must be in [0, 1], got {compression}")
    if compression == 0.0:
        return latents
    s = compression * 0.75
    return latents * (1.0 - 0.8 * s * torch.sigmoid(4.0 * s * (latents.abs() - 1.0)))


def decode_noise(
    latents: torch.Tensor, scale: float | Sequence[float], generator: torch.Generator | None
) -> torch.Tensor:
    """Blend fresh Gaussian noise into the latents before a timestep-conditioned VAE decode:
    ``x (1 - scale) + eps scale``, ``scale`` one value or one per batch element.

    The reference draws ``eps`` with ``randn_like`` from the global RNG; ``generator`` stands in for it. Its latents are
    an unpatchified (b, f, h, w, c)-strided view, and torch fills a non-contiguous tensor with its serial sampler in
    memory order, so ``eps`` is drawn into an identically strided view. The scale becomes a float32 tensor first, as in
    the reference, so ``1 - scale`` rounds in float32."""
    return blend_decode_noise(latents, draw_decode_noise(latents, generator), scale)


def draw_decode_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The ``eps`` of :func:`decode_noise` for latents shaped like ``like`` (B, C, F, H, W); a slice of its frames is
    the noise of those frames, so a video decoded piece by piece blends what a whole decode would."""
    b, c, f, h, w = like.shape
    eps = torch.empty((b, f, h, w, c), dtype=like.dtype, device=like.device).permute(0, 4, 1, 2, 3)
    return eps.normal_(generator=generator)


def blend_decode_noise(latents: torch.Tensor, eps: torch.Tensor, scale: float | Sequence[float]) -> torch.Tensor:
    """``latents (1 - scale) + eps scale``, the scale one value or one per batch element, as a float32 tensor."""
    b = latents.shape[0]
    scales = [float(scale)] * b if isinstance(scale, (int, float)) else [float(s) for s in scale]
    if len(scales) != b:
        raise ValueError(f"decode noise: {len(scales)} scales for a batch of {b}")
    s = torch.tensor(scales, dtype=torch.float32, device=latents.device).reshape(b, *([1] * (latents.ndim - 1)))
    return latents * (1 - s) + eps * s
