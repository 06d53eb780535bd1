"""Temporal windows of a long video (control-long.md §1.2, diffusers' ``LTXI2VLongMultiPromptPipeline``): which latent
frames each window covers, the token state a window is denoised from, and how its output joins the video so far.

A window is denoised as a clip of its own: its positions restart at t = 0, so a 60 s video never stretches RoPE past
the lengths the model was trained on. What ties it to the rest is data appended after its frames, each with a mask
value m (1 = free, 0 = clean; a token's model time is ``sigma * m``):

- the previous window's last ``overlap`` latent frames (m = 1 - overlap strength), at the positions of the window's
  first ``overlap`` frames, which they stand in for;
- the first frame's image latent, the long-term guide (m = 0), at pixel time -8 (one latent frame before the clip).

In the first window an image also sits in place at frame 0 (m = 1 - its strength). After denoising, the appended
tokens are dropped, the window's first frame too (a latent of one pixel frame, re-read as eight), and the next
``overlap - 1`` frames are cross-faded into the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltxv.model.patchify import VAE_SCALE, latent_grid, patchify, pixel_positions


def temporal_windows(latent_frames: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) latent frames of every window: ``tile`` frames each, starting ``tile - overlap`` apart, the last one
    cut at the end; stops at the first window that reaches the end (so every later window has more than ``overlap``
    frames). 161 pixel frames (21 latent) at 10/3 -> (0, 10), (7, 17), (14, 21)."""
    if not 0 < overlap < tile:
        raise ValueError(f"windows need 0 < overlap < tile, got overlap {overlap}, tile {tile}")
    out, start = [], 0
    while True:
        end = min(start + tile, latent_frames)
        out.append((start, end))
        if end == latent_frames:
            return out
        start += tile - overlap


@dataclass(frozen=True)
class WindowState:
    """The tokens of one window: its own frames first, then the appended ones."""

    clean: torch.Tensor  # (1, N, C) the window's known latents (zeros where free), appended frames included
    mask: torch.Tensor  # (1, N) float32, 1 = free
    positions: torch.Tensor  # (1, 3, N) pixel coordinates (t in frames, not yet divided by the frame rate)
    grid: tuple[int, int, int]  # latent (f, h, w) of the window's own frames
    num_appended: int  # latent frames after the window's own

    def noised(self, noise: torch.Tensor, t0: float = 1.0) -> torch.Tensor:
        """The initial state from noise (1, C, F + appended, H, W) in the 5-D layout diffusers draws it in; (1, N, C).
        At ``t0 = 1`` diffusers' ``m eps + (1 - m) clean``; a refining pass starting at ``t0 < 1`` puts the free
        tokens at ``t0 eps + (1 - t0) clean`` (ComfyUI's, the reference's re-noising: diffusers ignores the latents
        of free tokens there)."""
        m, eps = self.mask.unsqueeze(-1), patchify(noise)
        if t0 < 1.0:
            eps = t0 * eps + (1.0 - t0) * self.clean
        return eps * m + (1.0 - m) * self.clean

    def video(self, tokens: torch.Tensor) -> torch.Tensor:
        """The window's own frames (1, C, f, h, w) of a token state (1, N, C)."""
        f, h, w = self.grid
        return tokens[:, : f * h * w].transpose(1, 2).reshape(1, -1, f, h, w)


def window_state(
    frames: torch.Tensor,
    *,
    first_mask: float | None = None,
    tail: torch.Tensor | None = None,
    tail_mask: float = 0.5,
    guides: torch.Tensor | None = None,
    guides_start: int = 0,
    guides_mask: float = 0.0,
    guide: torch.Tensor | None = None,
    causal_fix: bool = True,
) -> WindowState:
    """The state of a window of ``frames`` (1, C, f, h, w) (zeros where free; the image at frame 0 in the first
    window, with mask ``first_mask``), with, appended in this order: the previous window's ``tail`` (1, C, o, h, w)
    at mask ``tail_mask``; IC-LoRA ``guides`` (1, C, g, h, w) at mask ``guides_mask``, at the positions of the
    window's frames from ``guides_start`` on (the detailer's guide is the window's own starting latents); the
    long-term ``guide`` (1, C, 1, h, w), clean."""
    f, h, w = frames.shape[2:]
    parts, masks = [frames], [torch.ones(f, device=frames.device)]
    if first_mask is not None:
        masks[0][0] = first_mask
    positions = [_positions(f, h, w, frames.device, causal_fix)]
    if tail is not None:
        o = tail.shape[2]
        parts.append(tail.to(frames.dtype))
        masks.append(torch.full((o,), tail_mask, device=frames.device))
        positions.append(_positions(o, h, w, frames.device, causal_fix))  # those of frames 0..o-1
    if guides is not None:
        g = guides.shape[2]
        parts.append(guides.to(frames.dtype))
        masks.append(torch.full((g,), guides_mask, device=frames.device))
        positions.append(positions[0][:, :, guides_start * h * w : (guides_start + g) * h * w])
    if guide is not None:
        parts.append(guide.to(frames.dtype))
        masks.append(torch.zeros(1, device=frames.device))
        pos = _positions(1, h, w, frames.device, False)
        pos[:, 0] -= VAE_SCALE[0]  # one latent frame before the clip
        positions.append(pos)
    mask = torch.cat(masks).to(torch.float32)[:, None].expand(-1, h * w).reshape(1, -1)  # (1, N) in (f h w) order
    latents = torch.cat(parts, dim=2)
    return WindowState(patchify(latents), mask, torch.cat(positions, dim=2), (f, h, w), latents.shape[2] - f)


def _positions(f: int, h: int, w: int, device: torch.device, causal_fix: bool) -> torch.Tensor:
    return pixel_positions(latent_grid(f, h, w, 1, device), causal_fix=causal_fix, frame_rate=1.0)


def cross_fade(video: torch.Tensor, new: torch.Tensor, overlap: int) -> torch.Tensor:
    """``video`` (1, C, F, H, W) continued by ``new``, whose first ``overlap`` frames are blended with the last
    ``overlap`` of ``video`` by linear weights ``linspace(1, 0, overlap + 2)[1:-1]`` (the old frames' share)."""
    if overlap == 0:
        return torch.cat([video, new], dim=2)
    alpha = torch.linspace(1, 0, overlap + 2, device=video.device, dtype=video.dtype)[1:-1].view(1, 1, -1, 1, 1)
    blended = alpha * video[:, :, -overlap:] + (1 - alpha) * new[:, :, :overlap]
    return torch.cat([video[:, :, :-overlap], blended, new[:, :, overlap:]], dim=2)
