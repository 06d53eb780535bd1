"""The latent state of one denoising pass, and the conditioning items that edit it.

Every conditioning mode is an edit of the same state (reference ``prepare_conditioning``, study §4.3):

- media at frame 0 (image-to-video, or a video prefix = forward extension): the first latent frames are blended
  towards the encoded media (``lerp(noise, z, strength)``) in place, and their tokens get ``strength``;
- a single frame at k > 0 (keyframe): its latent, blended with fresh noise, is *appended* as extra tokens in front of
  the sequence, at RoPE time ``k`` (their own causal coordinate + k);
- a video at k > 0 (k a multiple of 8; backward extension, an inserted segment): latent frames 2.. are blended in place
  at latent index ``k/8 + 2``; its first two latent frames (whose encoding differs, by causality) are appended like a
  keyframe.

A token's ``strength`` s sets its noise level ``1 - s``: the model sees timestep ``min(t, 1 - s)``, and the token is
only updated once ``t`` falls below ``1 - s`` (hard conditioning, s = 1, is never updated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltxv.model.patchify import latent_grid, patchify, pixel_positions

# Latent frames of a non-first sequence that are appended as tokens rather than blended in place (reference default
# num_prefix_latent_frames=2, prefix mode "concat").
NUM_PREFIX_LATENT_FRAMES = 2


@dataclass(frozen=True)
class EncodedItem:
    """A conditioning item after VAE encoding: normalised latents (B, C, f, h, w) at the pass's latent size."""

    latents: torch.Tensor
    frame: int  # pixel frame index of the item's first frame
    strength: float


@dataclass
class LatentState:
    """Tokens of one pass. Appended conditioning tokens come first (``num_prefix`` of them)."""

    latents: torch.Tensor  # (B, N, C)
    positions: torch.Tensor  # (B, 3, N) pixel coordinates (t in frames, not yet divided by the frame rate)
    strength: torch.Tensor | None  # (B, N) float32 conditioning strength; None when nothing conditions the pass
    clean: torch.Tensor  # (B, N, C) the state before denoising; hard-conditioned tokens are reset to it
    num_prefix: int
    grid: tuple[int, int, int]  # latent (f, h, w) of the generated video

    def video_tokens(self) -> torch.Tensor:
        return self.latents[:, self.num_prefix :]


def _positions(latents: torch.Tensor, causal_fix: bool) -> torch.Tensor:
    b, _, f, h, w = latents.shape
    return pixel_positions(latent_grid(f, h, w, b, latents.device), causal_fix=causal_fix, frame_rate=1.0)


def build_state(
    latents: torch.Tensor,
    items: list[EncodedItem],
    *,
    generator: torch.Generator | None,
    causal_fix: bool,
) -> LatentState:
    """Apply ``items`` (in order) to the initial latents (B, C, F, H, W) and patchify into a :class:`LatentState`.

    ``generator`` supplies the noise blended into appended items, one draw per appended item, in item order (the
    reference's order on its generator)."""
    b, _, f, h, w = latents.shape
    latents = latents.clone()
    mask = torch.zeros((b, f, h, w), dtype=torch.float32, device=latents.device)
    extra_tokens: list[torch.Tensor] = []
    extra_positions: list[torch.Tensor] = []
    extra_strength: list[torch.Tensor] = []
    for item in items:
        z, s = item.latents.to(latents.dtype), item.strength
        if z.shape[-2:] != (h, w):
            raise ValueError(
                f"conditioning latents are {tuple(z.shape[-2:])}, the video {(h, w)}; resize the media first"
            )
        if item.frame == 0:
            fl = z.shape[2]
            latents[:, :, :fl] = torch.lerp(latents[:, :, :fl], z, s)
            mask[:, :fl] = s
            continue
        if z.shape[2] > 1:  # a sequence starting later: blend all but the prefix in place
            if item.frame % 8:
                raise ValueError(f"a conditioning video must start at a multiple of 8 frames, got frame {item.frame}")
            p = NUM_PREFIX_LATENT_FRAMES
            start = item.frame // 8 + p
            rest = z[:, :, p:]
            if rest.shape[2]:
                latents[:, :, start : start + rest.shape[2]] = torch.lerp(
                    latents[:, :, start : start + rest.shape[2]], rest, s
                )
                mask[:, start : start + rest.shape[2]] = s
            z = z[:, :, :p]
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = torch.lerp(noise, z, s)
        pos = _positions(z, causal_fix)
        pos[:, 0] += item.frame
        tokens = patchify(z)
        extra_tokens.append(tokens)
        extra_positions.append(pos)
        extra_strength.append(torch.full(tokens.shape[:2], s, dtype=torch.float32, device=latents.device))
    tokens = patchify(latents)
    positions = _positions(latents, causal_fix)
    strength = None
    if items:
        strength = torch.cat([*extra_strength, mask.reshape(b, -1)], dim=1)
        tokens = torch.cat([*extra_tokens, tokens], dim=1)
        positions = torch.cat([*extra_positions, positions], dim=2)
    num_prefix = sum(t.shape[1] for t in extra_tokens)
    return LatentState(tokens, positions, strength, tokens.clone(), num_prefix, (f, h, w))
