"""Previews: a linear map from a latent voxel to an RGB colour, fitted by ltxv itself for each model.

ComfyUI shows latent previews through a hand-fitted C x 3 table per model family. ltxv fits its own, for the VAE it
actually runs (the demo model has its own channel count; the released models 128), by least squares:

1. Synthetic clips (smooth colour fields: a random gradient plus a few soft blobs of random colour drifting across
   the frames, seeded) are encoded by the model's VAE to normalised latents ``z`` (C, F', H', W') (the posterior
   mean, the space the transformer denoises in), then decoded back to frames with the recipe's decode timestep.
2. Each decoded frame is reduced to the latent grid: the mean over each 32 x 32 pixel block and over the pixel frames
   a latent frame covers (the first latent frame covers frame 0 alone; latent frame k, frames 8k-7..8k).
3. ``[z, 1] @ [W; b] = rgb`` is solved over all voxels (ridge-regularised, ``lambda = 1e-3`` times the mean diagonal
   of the normal matrix): ``W`` is C x 3, ``b`` the bias.

The fit takes seconds (eight 256 x 256 x 9 clips through the VAE once for 128 channels; smaller clips for fewer) and is cached
next to the job store, keyed by the checkpoint file's name, size and modification time. Applied to the denoised
estimate ``x0 = x_t - t v`` of a step, it gives an image of what the decode would show, on the latent grid (a 768 x 512
video previews at 24 x 16, upscaled for display). The test checks the map against held-out decoded clips.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ltxv.model.vae import VideoVAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentRGB:
    weight: torch.Tensor  # (C, 3) float32
    bias: torch.Tensor  # (3,)

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents (1, C, F', H', W') -> RGB uint8 (F', H', W', 3)."""
        z = latents[0].detach().float().cpu().permute(1, 2, 3, 0)  # (F', H', W', C)
        rgb = z @ self.weight + self.bias  # in the VAE's [-1, 1]
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> LatentRGB:
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["weight"], t["bias"])


def synthetic_clips(n: int, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, frames, height, width) in [-1, 1]: a colour gradient and four soft blobs of random colour each,
    drifting across the frames (seeded, so a fit is reproducible)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, width)
    clips = []
    for _ in range(n):
        c0, c1, c2 = (torch.rand(3, 1, 1, generator=g) for _ in range(3))
        base = c0 + (c1 - c0) * x + (c2 - c0) * y  # (3, H, W)
        blobs = [(torch.rand(3, 1, 1, generator=g), torch.rand(4, generator=g)) for _ in range(4)]
        video = []
        for f in range(frames):
            frame = base.clone()
            for colour, (cy, cx, r, speed) in blobs:
                dy, dx = cy + 0.3 * speed * f / frames, cx - 0.3 * speed * f / frames
                w = torch.exp(-((y - dy) ** 2 + (x - dx) ** 2) / (2 * (0.05 + 0.2 * r) ** 2))
                frame = frame * (1 - w) + colour * w
            video.append(frame)
        clips.append(torch.stack(video, dim=1))
    return torch.stack(clips).clamp(0, 1) * 2 - 1


def to_latent_grid(video: torch.Tensor, spatial: int, temporal: int) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, 3, F', H/s, W/s): block means over the pixels and frames each latent voxel covers."""
    first = video[:, :, :1]
    rest = video[:, :, 1:]
    b, c, f, h, w = rest.shape
    groups = [first] + ([rest.reshape(b, c, f // temporal, temporal, h, w).mean(3)] if f else [])
    frames = torch.cat(groups, dim=2)
    bf = frames.transpose(1, 2).reshape(-1, c, h, w)
    pooled = F.avg_pool2d(bf, spatial)
    return pooled.reshape(b, -1, c, h // spatial, w // spatial).transpose(1, 2)


def latent_pairs(
    vae: VideoVAE, video: torch.Tensor, decode_timestep: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, rgb) pairs, one row per latent voxel: (N, C) normalised latents and (N, 3) the decoded frames' colour."""
    p = next(vae.decoder.parameters())
    zs, rgbs = [], []
    for clip in video:
        z = vae.encode(clip[None].to(device=p.device, dtype=p.dtype))
        t = decode_timestep if vae.cfg.timestep_conditioning else None
        decoded = vae.decode(z, timestep=t).float()
        target = to_latent_grid(decoded[:, :, : clip.shape[1]], vae.spatial_compression, vae.temporal_compression)
        zs.append(z.float().cpu().flatten(2).transpose(1, 2).reshape(-1, z.shape[1]))
        rgbs.append(target.cpu().flatten(2).transpose(1, 2).reshape(-1, 3))
    return torch.cat(zs), torch.cat(rgbs)


def solve(z: torch.Tensor, rgb: torch.Tensor, ridge: float = 1e-3) -> LatentRGB:
    """Least squares ``[z, 1] @ [W; b] ~ rgb``, ridge-regularised (module docstring), in float64."""
    a = torch.cat([z, torch.ones(len(z), 1)], dim=1).double()
    normal = a.T @ a
    reg = ridge * normal.diagonal().mean() * torch.eye(len(normal), dtype=normal.dtype)
    reg[-1, -1] = 0  # the bias is not shrunk
    sol = torch.linalg.solve(normal + reg, a.T @ rgb.double())
    return LatentRGB(sol[:-1].float(), sol[-1].float())


@torch.inference_mode()
def fit_latent_rgb(
    vae: VideoVAE, *, clips: int = 8, frames: int = 9, seed: int = 0, decode_timestep: float = 0.05
) -> LatentRGB:
    """Fit the map for ``vae`` (module docstring). The clips are just large enough for eight voxels per unknown
    (256 x 256 for 128 channels, 96 x 96 for the tiny models' 16)."""
    s, t = vae.spatial_compression, vae.temporal_compression
    n = max(1, (frames - 1) // t) * t + 1
    latent_frames = (n - 1) // t + 1
    per_side = math.ceil(math.sqrt(8 * (vae.latent_channels + 1) / (clips * latent_frames)))
    side = max(2, per_side) * s
    z, rgb = latent_pairs(vae, synthetic_clips(clips, n, side, side, seed), decode_timestep)
    return solve(z, rgb)


def cached_latent_rgb(
    vae: VideoVAE, checkpoint: str | Path, cache: Path, fit: bool = True, clips: int = 8
) -> LatentRGB | None:
    """The map for the model in ``checkpoint``: from ``cache`` if fitted before, else fitted now and stored there."""
    path = Path(checkpoint)
    try:
        st = path.stat()
        key = f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
    except OSError:
        key = path.stem
    file = cache / f"{key}.safetensors"
    if file.is_file():
        try:
            return LatentRGB.load(file)
        except Exception:  # a damaged cache entry is refitted
            log.warning("preview map %s cannot be read; fitting again", file)
    if not fit:
        return None
    m = fit_latent_rgb(vae, clips=clips)
    m.save(file)
    file.with_suffix(".json").write_text(json.dumps({"checkpoint": str(path), "channels": int(m.weight.shape[0])}))
    log.info("preview map fitted for %s (%d channels), cached in %s", path.name, m.weight.shape[0], file)
    return m
