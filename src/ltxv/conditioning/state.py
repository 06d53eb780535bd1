"""The latent state of one denoising pass, and the conditioning items that edit it.

Every conditioning mode is an edit of the same state (reference ``prepare_conditioning``, study §4.3):

- media at frame 0 (image-to-video, or a video prefix = forward extension): the first latent frames are blended
  towards the encoded media (``lerp(noise, z, strength)``) in place, and their tokens get ``strength``;
- a single frame at k > 0 (keyframe): its latent, blended with fresh noise, is *appended* as extra tokens in front of
  the sequence, at RoPE time ``k`` (their own causal coordinate + k);
- a video at k > 0 (k a multiple of 8; backward extension, an inserted segment): latent frames 2.. are blended in place
  at latent index ``k/8 + 2``; its first two latent frames (whose encoding differs, by causality) are appended like a
  keyframe.

- an IC-LoRA control (reference) video, :class:`ControlItem`: its clean latents, encoded at the video's size and frame
  count, are appended as extra tokens *after* the video's, at exactly the video tokens' positions (LTX-Video issue
  #223: same token count and positions as the generated video; ComfyUI's ``LTXVAddLatentGuide`` appends them the same
  way). They are cut off again after sampling.

A token's ``strength`` s sets its noise level ``1 - s``: the model sees timestep ``min(t, 1 - s)``, and the token is
only updated once ``t`` falls below ``1 - s`` (hard conditioning, s = 1, is never updated). Hard control tokens are
also exempt from the per-step conditioning noise (``image_cond_noise_scale``) that the reference adds to every hard
token: they are ``keep_clean``, so the model sees exactly the clean reference at t = 0 at every step, as the IC-LoRA
was trained (and as ComfyUI samples it). The reference's IC-LoRA validation pipeline noises them too; ltxv does not.
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


@dataclass(frozen=True)
class ControlItem:
    """IC-LoRA control latents (B, C, f, h, w), normalised, at the video's latent size, with their ``strength``."""

    latents: torch.Tensor
    strength: float = 1.0


@dataclass
class LatentState:
    """Tokens of one pass: appended conditioning tokens first (``num_prefix`` of them), then the video's, then the
    control tokens (``num_control``)."""

    latents: torch.Tensor  # (B, N, C)
    positions: torch.Tensor  # (B, 3, N) pixel coordinates (t in frames, not yet divided by the frame rate)
    strength: torch.Tensor | None  # (B, N) float32 conditioning strength; None when nothing conditions the pass
    clean: torch.Tensor  # (B, N, C) the state before denoising; hard-conditioned tokens are reset to it
    num_prefix: int
    grid: tuple[int, int, int]  # latent (f, h, w) of the generated video
    num_control: int = 0
    keep_clean: torch.Tensor | None = None  # (B, N) bool: hard tokens that never get conditioning noise (controls)

    @property
    def video(self) -> slice:
        """Where the video's tokens are in the sequence."""
        f, h, w = self.grid
        return slice(self.num_prefix, self.num_prefix + f * h * w)

    def video_tokens(self) -> torch.Tensor:
        return self.latents[:, self.video]


def _positions(latents: torch.Tensor, causal_fix: bool) -> torch.Tensor:
    b, _, f, h, w = latents.shape
    return pixel_positions(latent_grid(f, h, w, b, latents.device), causal_fix=causal_fix, frame_rate=1.0)


def build_state(
    latents: torch.Tensor,
    items: list[EncodedItem | ControlItem],
    *,
    generator: torch.Generator | None,
    causal_fix: bool,
) -> LatentState:
    """Apply ``items`` (in order) to the initial latents (B, C, F, H, W) and patchify into a :class:`LatentState`.

    ``generator`` supplies the noise blended into appended items, one draw per appended item, in item order (the
    reference's order on its generator); a control item of strength < 1 draws its noise there too, in the same order
    (a hard one draws nothing)."""
    b, _, f, h, w = latents.shape
    latents = latents.clone()
    mask = torch.zeros((b, f, h, w), dtype=torch.float32, device=latents.device)
    extra_tokens: list[torch.Tensor] = []
    extra_positions: list[torch.Tensor] = []
    extra_strength: list[torch.Tensor] = []
    controls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # tokens, strength, keep clean
    for item in items:
        z, s = item.latents.to(latents.dtype), item.strength
        if isinstance(item, ControlItem):
            controls.append(_control_tokens(z, s, latents.shape, generator))
            continue
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
    strength = keep_clean = None
    if items:
        strength = torch.cat([*extra_strength, mask.reshape(b, -1), *(c[1] for c in controls)], dim=1)
        # A control token sits exactly where the video token it describes sits.
        positions = torch.cat([*extra_positions, positions, *(positions for _ in controls)], dim=2)
        tokens = torch.cat([*extra_tokens, tokens, *(c[0] for c in controls)], dim=1)
    num_control = sum(c[0].shape[1] for c in controls)
    if controls:
        others = torch.zeros((b, tokens.shape[1] - num_control), dtype=torch.bool, device=latents.device)
        keep_clean = torch.cat([others, *(c[2] for c in controls)], dim=1)
    num_prefix = sum(t.shape[1] for t in extra_tokens)
    return LatentState(tokens, positions, strength, tokens.clone(), num_prefix, (f, h, w), num_control, keep_clean)


def _control_tokens(
    z: torch.Tensor, s: float, shape: torch.Size, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A control item's tokens (B, N, C), strengths (B, N) and keep-clean flags (B, N)."""
    b, _, f, h, w = shape
    if tuple(z.shape[2:]) != (f, h, w) or z.shape[0] not in (1, b):
        raise ValueError(
            f"control latents are {tuple(z.shape[2:])}, the video {(f, h, w)}: encode it at the video's size"
        )
    z = z.expand(b, -1, -1, -1, -1)
    if s < 1.0:  # a soft control starts at its noise level 1 - s, like any appended item (ComfyUI's mask blend)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = torch.lerp(noise, z, s)
    tokens = patchify(z)
    strength = torch.full(tokens.shape[:2], s, dtype=torch.float32, device=z.device)
    return tokens, strength, strength > 1.0 - 1e-6
