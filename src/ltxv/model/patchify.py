"""Latent video <-> token sequence, and the positions the transformer's RoPE sees.

Patch size is 1 in every LTX-Video checkpoint (reference ``SymmetricPatchifier(patch_size=1)``), so a token is one
latent voxel and the order is ``(f h w)``. Positions are kept outside the model (flux's ``img_ids``): the pipeline
builds them once per request, edits them for conditioning tokens, and hands them to :meth:`Transformer.rope`.
"""

from __future__ import annotations

import torch

# Pixels covered by one latent voxel along (t, y, x): the VAE's temporal and spatial compression.
VAE_SCALE = (8, 32, 32)


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F*H*W, C), tokens in ``(f h w)`` order."""
    return latents.flatten(2).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
    """(B, F*H*W, C) -> (B, C, F, H, W); the inverse of :func:`patchify`."""
    b, n, c = tokens.shape
    if n != f * h * w:
        raise ValueError(f"{n} tokens cannot be unpatchified to a {f}x{h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, c, f, h, w)


def latent_grid(f: int, h: int, w: int, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer latent coordinates (t, y, x) of every token, (B, 3, F*H*W) int64, in :func:`patchify` order."""
    axes = [torch.arange(n, device=device) for n in (f, h, w)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)  # (3, N)
    return grid.unsqueeze(0).expand(batch, -1, -1).contiguous()


def pixel_positions(
    latent_coords: torch.Tensor,
    scale: tuple[int, int, int] = VAE_SCALE,
    *,
    causal_fix: bool,
    frame_rate: float,
) -> torch.Tensor:
    """Latent coordinates (B, 3, N) -> the transformer's positions (B, 3, N) float32: (seconds, pixel y, pixel x).

    Each token sits at the first pixel it covers. With ``causal_fix`` (0.9.5+ checkpoints) latent frame f covers
    pixel frames from ``max(0, 8f + 1 - 8)`` because the causal VAE keeps the first frame alone. The time axis is then
    divided by ``frame_rate``. The arithmetic follows the reference pipeline so the result matches bit for bit:
    integer scaling, cast to float32, then a multiply by the reciprocal of the frame rate.
    """
    factors = torch.tensor(scale, device=latent_coords.device)
    pixels = latent_coords * factors[None, :, None]  # (B, 3, N)
    if causal_fix:
        pixels[:, 0] = (pixels[:, 0] + 1 - scale[0]).clamp(min=0)
    positions = pixels.to(torch.float32)
    positions[:, 0] = positions[:, 0] * (1.0 / frame_rate)
    return positions
