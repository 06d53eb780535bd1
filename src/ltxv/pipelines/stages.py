"""The stages every generation is made of: encode text, run one pass (initial latents, conditioning, denoise), decode.

Seed parity with the reference (study §4.14): the reference draws from two streams, its ``generator`` (initial noise,
appended-item noise, per-step conditioning noise) and the global RNG (VAE posterior samples, stochastic-sampling noise,
decode noise). :class:`Streams` reproduces both with generators of our own; the global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltxv.conditioning.state import ControlItem, EncodedItem, build_state
from ltxv.config import SchedulerConfig
from ltxv.model.patchify import unpatchify
from ltxv.model.vae import VideoVAE
from ltxv.pipelines.denoise import CallTransformer, Denoiser, StepModels, TextContext
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import PassSettings, RequestError
from ltxv.sampling.latent_ops import decode_noise, tone_map
from ltxv.sampling.samplers import sample_rectified_flow
from ltxv.sampling.schedules import check_allowed, make_timesteps
from ltxv.text.t5 import TextEncoder


@dataclass
class Streams:
    noise: torch.Generator  # the reference's `generator`
    aux: torch.Generator  # stands in for the reference's global RNG

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> Streams:
        return cls(torch.Generator(device).manual_seed(seed), torch.Generator(device).manual_seed(seed))


@dataclass(frozen=True)
class PassControl:
    """An IC-LoRA control video and the passes (0-based) it conditions."""

    media: torch.Tensor | None  # (1, 3, F, H, W) in [-1, 1], F the video's frames; None: the pass's starting latents
    strength: float = 1.0
    passes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class PassMedia:
    """Pixel media for one pass, all (1, 3, F, H, W) in [-1, 1], resized to the pass size when used."""

    conditioning: tuple[tuple[torch.Tensor, int, float], ...] = ()  # (media, frame, strength)
    source: torch.Tensor | None = None  # video-to-video input
    control: tuple[PassControl, ...] = ()  # each used by the passes it names


def encode_text(encoder: TextEncoder, prompt: str, negative_prompt: str) -> TextContext:
    pos, pos_mask = encoder.encode([prompt])
    neg, neg_mask = encoder.encode([negative_prompt])
    return TextContext(pos, pos_mask, neg, neg_mask)


def resize_frames(media: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, no antialias, per frame: the reference's ``resize_tensor`` (and its final multi-scale resize)."""
    if media.shape[-2:] == (height, width):
        return media
    b, c, f, h, w = media.shape
    flat = media.transpose(1, 2).reshape(b * f, c, h, w)
    flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return flat.reshape(b, f, c, height, width).transpose(1, 2)


def pass_timesteps(
    scheduler: SchedulerConfig, settings: PassSettings, n_tokens: int, allowed: tuple[float, ...] | None
) -> torch.Tensor:
    ts = make_timesteps(
        scheduler,
        settings.num_inference_steps,
        n_tokens,
        timesteps=settings.timesteps,
        skip_initial=settings.skip_initial_inference_steps,
        skip_final=settings.skip_final_inference_steps,
    )
    if allowed is not None:
        check_allowed(ts, allowed)
    return ts


@dataclass(frozen=True)
class PassPlan:
    """What one denoising pass runs: its size, schedule and settings, and where it sits in the request."""

    height: int
    width: int
    num_frames: int
    frame_rate: float
    settings: PassSettings
    timesteps: torch.Tensor  # (S,) float32, descending
    stg_mode: str
    image_cond_noise_scale: float
    pass_index: int = 0
    num_passes: int = 1


def run_pass(
    models: StepModels,
    vae: VideoVAE,
    text: TextContext,
    plan: PassPlan,
    media: PassMedia,
    init_latents: torch.Tensor | None,
    streams: Streams,
    *,
    call: CallTransformer | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """One pass at the plan's size with ``models[i]`` = (label, transformer) running step i; returns normalised
    latents (1, C, F', H', W') of the video (no appended tokens). ``call``: see :class:`Denoiser`."""
    s, ts = vae.spatial_compression, vae.temporal_compression
    f, h, w = (plan.num_frames - 1) // ts + 1, plan.height // s, plan.width // s
    c = models[0][1].cfg.in_channels
    dtype = text.positive.dtype
    t0 = plan.timesteps[0]
    if media.source is not None:
        if init_latents is not None:
            raise RequestError("a pass cannot start from both latents and a source video")
        init_latents = vae.encode(
            resize_frames(media.source, plan.height, plan.width).to(vae_dtype(vae)), generator=streams.aux
        )
    # The reference draws the noise in token layout (b, f*h*w, c), then rearranges.
    noise = torch.randn((1, f * h * w, c), generator=streams.noise, dtype=dtype, device=text.positive.device)
    latents = noise.transpose(1, 2).reshape(1, c, f, h, w)
    if init_latents is not None:
        if tuple(init_latents.shape) != (1, c, f, h, w):
            raise RequestError(f"initial latents are {tuple(init_latents.shape)}, expected {(1, c, f, h, w)}")
        latents = t0 * latents + (1 - t0) * init_latents.to(dtype)
    items: list[EncodedItem | ControlItem] = [
        EncodedItem(
            vae.encode(resize_frames(m, plan.height, plan.width).to(vae_dtype(vae)), generator=streams.aux),
            frame,
            strength,
        )
        for m, frame, strength in media.conditioning
    ]
    for c in media.control:
        if plan.pass_index in c.passes:
            items.append(ControlItem(control_latents(vae, c, plan, init_latents), c.strength))
    causal_fix = models[0][1].cfg.causal_temporal_positioning
    state = build_state(latents, items, generator=streams.noise, causal_fix=causal_fix)
    steps = [float(t) for t in plan.timesteps.tolist()]
    denoiser = Denoiser(
        models,
        text,
        state.positions,
        plan.settings,
        steps,
        frame_rate=plan.frame_rate,
        stg_mode=plan.stg_mode,
        call=call,
    )

    def on_step(i: int, t: float, x: torch.Tensor, x0: torch.Tensor) -> None:
        video = state.video
        progress(  # type: ignore[misc]
            ProgressEvent(
                "denoise",
                i + 1,
                len(steps),
                pass_index=plan.pass_index,
                num_passes=plan.num_passes,
                t=t,
                model=models[i][0],
                latents=unpatchify(x[:, video], f, h, w),
                denoised=unpatchify(x0[:, video], f, h, w),
            )
        )

    tokens = sample_rectified_flow(
        denoiser,
        state.latents,
        plan.timesteps,
        strength=state.strength,
        clean=state.clean,
        image_cond_noise_scale=plan.image_cond_noise_scale,
        keep_clean=state.keep_clean,
        stochastic=plan.settings.stochastic_sampling,
        noise=streams.noise,
        aux=streams.aux,
        on_step=on_step if progress is not None else None,
    )
    return unpatchify(tokens[:, state.video], f, h, w)


def control_latents(
    vae: VideoVAE, control: PassControl, plan: PassPlan, init_latents: torch.Tensor | None
) -> torch.Tensor:
    """A control video's latents at the pass's size: the posterior mean of its frames resized to the pass (no
    sampling: a reference has no business being noisy), or the pass's starting latents (a detailer pass)."""
    if control.media is None:
        if init_latents is None:
            raise RequestError(f"pass {plan.pass_index + 1} starts from noise, so it has no latents to guide it with")
        return init_latents
    return vae.encode(resize_frames(control.media, plan.height, plan.width).to(vae_dtype(vae)))


def vae_dtype(vae: VideoVAE) -> torch.dtype:
    return next(vae.decoder.parameters()).dtype  # the encoder may not be loaded yet


def decode(
    vae: VideoVAE,
    latents: torch.Tensor,
    *,
    decode_timestep: float,
    decode_noise_scale: float | None,
    tone_map_ratio: float,
    streams: Streams,
    size: tuple[int, int],
    crop: tuple[int, int, int, int],
    num_frames: int,
    progress: ProgressCallback | None = None,
    chunk_frames: int | str | None = "auto",
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalised latents (1, C, F', H', W') -> the output video (num_frames, h, w, 3) float32 in [0, 1], or uint8
    (``out_dtype``: each frame truncated from its float32 values as ``ltxv.io.video.to_uint8`` does, a quarter of
    the memory).

    The reference's decode noise and tone mapping, then every decoded frame, as it leaves the (streaming) decoder, is
    mapped to [0, 1], resized to ``size`` (bilinear, no antialias: the multi-scale recipe's final resize; a no-op at
    the decoded size) and cropped to ``crop`` = (top, left, h, w); frames past ``num_frames`` are dropped. So the
    decoded video never exists whole next to the output: the result is the only video-sized tensor. ``chunk_frames``:
    the decode strategy, see :meth:`VideoVAE.decode` (:func:`ltxv.runtime.fastpath.plan_decode` chooses one)."""
    if latents.shape[0] != 1:
        raise ValueError(f"decode makes one video; got a batch of {latents.shape[0]} latents")
    timestep = None
    if vae.cfg.timestep_conditioning:
        scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        latents = decode_noise(latents, scale, streams.aux)
        timestep = torch.tensor([decode_timestep], device=latents.device)
    latents = tone_map(latents, tone_map_ratio)
    top, left, h, w = crop
    if out_dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"the decoded video is float32 or uint8, not {out_dtype}")
    out = torch.empty(num_frames, h, w, 3, device=latents.device, dtype=out_dtype)

    def sink(start: int, frames: torch.Tensor) -> None:  # frames (1, 3, n, H, W) in [-1, 1]
        n = min(frames.shape[2], num_frames - start)
        if n > 0:  # the reference's (x / 2 + 0.5).clamp(0, 1), in place on the one float32 copy
            x = resize_frames(frames[:, :, :n].float().div_(2).add_(0.5).clamp_(0, 1), *size)  # (1, 3, n, *size)
            x = x[0, :, :, top : top + h, left : left + w].permute(1, 2, 3, 0)
            out[start : start + n] = x if out_dtype == torch.float32 else x.mul(255).to(torch.uint8)
            if progress is not None:
                progress(ProgressEvent("decode", start + n, num_frames))

    vae.decode(
        latents.to(vae_dtype(vae)), timestep=timestep, generator=streams.aux, sink=sink, chunk_frames=chunk_frames
    )
    return out
