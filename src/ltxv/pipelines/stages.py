"""The stages every generation is made of: encode text, run one pass (initial latents, conditioning, denoise), decode.

Seed parity with the reference (study §4.14): the reference draws from two streams, its ``generator`` (initial noise,
appended-item noise, per-step conditioning noise) and the global RNG (VAE posterior samples, stochastic-sampling noise,
decode noise). :class:`Streams` reproduces both with generators of our own; the global RNG is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltxv.conditioning.state import ControlItem, EncodedItem, build_state
from ltxv.conditioning.window import WindowState
from ltxv.config import SchedulerConfig
from ltxv.model.patchify import unpatchify
from ltxv.model.vae import VideoVAE
from ltxv.model.vae_stream import DecodeStream, can_stream
from ltxv.pipelines.denoise import CallTransformer, Denoiser, StepModels, TextContext
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import GenerationRequest, PassSettings, RequestError
from ltxv.sampling.latent_ops import blend_decode_noise, decode_noise, draw_decode_noise, tone_map
from ltxv.sampling.samplers import Velocity, sample_euler_ancestral_rf, sample_rectified_flow
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
    activate: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """One pass at the plan's size with ``models[i]`` = (label, transformer) running step i; returns normalised
    latents (1, C, F', H', W') of the video (no appended tokens). ``call``: see :class:`Denoiser`. ``activate``:
    called with step i's label before the step (the residency policy's hook, which moves that transformer in)."""
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
        with_activation(denoiser, models, activate),
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


def run_window_pass(
    models: StepModels,
    text: TextContext,
    plan: PassPlan,
    state: WindowState,
    noise: torch.Tensor,
    generator: torch.Generator,
    *,
    window: tuple[int, int],
    t0: float = 1.0,
    call: CallTransformer | None = None,
    activate: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """One window of a long video (:mod:`ltxv.pipelines.long_video`): the pass's denoiser around
    :func:`~ltxv.sampling.samplers.sample_euler_ancestral_rf` from ``state`` noised with ``noise`` (the window's
    ``generator`` goes on drawing the ancestral noise; ``t0 < 1``: a refining pass, :meth:`WindowState.noised`);
    ``window``: (index, count) for the progress events; ``call``, ``activate``: as :func:`run_pass`. Returns the
    window's own frames (1, C, f, h, w), float32."""
    denoiser = Denoiser(
        models,
        text,
        state.positions.clone(),
        plan.settings,
        [float(t) for t in plan.timesteps.tolist()],
        frame_rate=plan.frame_rate,
        stg_mode=plan.stg_mode,
        call=call,
    )

    def on_step(i: int, t: float, x: torch.Tensor, x0: torch.Tensor) -> None:
        progress(  # type: ignore[misc]
            ProgressEvent(
                "denoise",
                i + 1,
                len(plan.timesteps),
                t=t,
                model=models[i][0],
                latents=state.video(x),
                denoised=state.video(x0),
                pass_index=plan.pass_index,
                num_passes=plan.num_passes,
                window=window[0],
                num_windows=window[1],
            )
        )

    tokens = sample_euler_ancestral_rf(
        with_activation(denoiser, models, activate),
        state.noised(noise, t0),
        plan.timesteps,
        mask=state.mask,
        clean=state.clean,
        generator=generator,
        on_step=on_step if progress is not None else None,
    )
    return state.video(tokens)


def with_activation(velocity: Velocity, models: StepModels, activate: Callable[[str], None] | None) -> Velocity:
    """``velocity`` with ``activate(label)`` of each step's transformer before the step (None: ``velocity``)."""
    if activate is None:
        return velocity

    def run(i: int, latents: torch.Tensor, t_tok: torch.Tensor) -> torch.Tensor:
        activate(models[i][0])  # type: ignore[misc]
        return velocity(i, latents, t_tok)

    return run


def vae_dtype(vae: VideoVAE) -> torch.dtype:
    return next(vae.decoder.parameters()).dtype  # the encoder may not be loaded yet


def output_settings(request: GenerationRequest, height: int, width: int) -> dict:
    """The decode stage's settings for ``request`` generated at (height, width): the recipe's decode timestep and noise,
    its last pass's tone mapping, and the resize and crop back to the requested size and frame count."""
    top, left = (height - request.height) // 2, (width - request.width) // 2
    return {
        "decode_timestep": request.recipe.decode_timestep,
        "decode_noise_scale": request.recipe.decode_noise_scale,
        "tone_map_ratio": request.recipe.passes[-1].tone_map_compression_ratio,
        "size": (height, width),
        "crop": (top, left, request.height, request.width),
        "num_frames": request.num_frames,
    }


# A consumer of the output video: frames (n, h, w, 3) float32 in [0, 1], called in frame order.
FrameConsumer = Callable[[torch.Tensor], None]


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
    frames: FrameConsumer | None = None,
    chunk_frames: int | str | None = "auto",
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Normalised latents (1, C, F', H', W') -> the output video (num_frames, h, w, 3) float32 in [0, 1], or uint8
    (``out_dtype``: each frame truncated from its float32 values as ``ltxv.io.video.to_uint8`` does, a quarter of
    the memory).

    The reference's decode noise and tone mapping, then every decoded frame, as it leaves the (streaming) decoder, is
    mapped to [0, 1], resized to ``size`` (bilinear, no antialias: the multi-scale recipe's final resize; a no-op at
    the decoded size) and cropped to ``crop`` = (top, left, h, w); frames past ``num_frames`` are dropped. So the
    decoded video never exists whole next to the output: the result is the only video-sized tensor. With ``frames``
    the output goes to it block by block instead (float32) and None is returned: no video-sized tensor at all.
    ``chunk_frames``: the decode strategy, see :meth:`VideoVAE.decode` (:func:`ltxv.runtime.fastpath.plan_decode`
    chooses one)."""
    if latents.shape[0] != 1:
        raise ValueError(f"decode makes one video; got a batch of {latents.shape[0]} latents")
    timestep = None
    if vae.cfg.timestep_conditioning:
        scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        latents = decode_noise(latents, scale, streams.aux)
        timestep = torch.tensor([decode_timestep], device=latents.device)
    latents = tone_map(latents, tone_map_ratio)
    if out_dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"the decoded video is float32 or uint8, not {out_dtype}")
    out = _Output(size, crop, num_frames, latents.device, frames, progress, out_dtype)
    vae.decode(
        latents.to(vae_dtype(vae)), timestep=timestep, generator=streams.aux, sink=out.sink, chunk_frames=chunk_frames
    )
    return out.video


class _Output:
    """The decoded frames' way out: to [0, 1], resized, cropped, trimmed, then into the output tensor or a consumer."""

    def __init__(
        self,
        size: tuple[int, int],
        crop: tuple[int, int, int, int],
        num_frames: int,
        device: torch.device,
        frames: FrameConsumer | None,
        progress: ProgressCallback | None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.size, self.crop, self.num_frames, self.frames, self.progress = size, crop, num_frames, frames, progress
        _, _, h, w = crop
        self.video = torch.empty(num_frames, h, w, 3, device=device, dtype=dtype) if frames is None else None

    def sink(self, start: int, block: torch.Tensor) -> None:  # block (1, 3, n, H, W) in [-1, 1]
        n = min(block.shape[2], self.num_frames - start)
        if n <= 0:
            return
        top, left, h, w = self.crop
        # The reference's (x / 2 + 0.5).clamp(0, 1), in place on the one float32 copy.
        x = resize_frames(block[:, :, :n].float().div_(2).add_(0.5).clamp_(0, 1), *self.size)  # (1, 3, n, *size)
        x = x[0, :, :, top : top + h, left : left + w].permute(1, 2, 3, 0)  # (n, h, w, 3)
        if self.video is None:
            self.frames(x)  # type: ignore[misc]
        else:  # uint8: truncated, as ltxv.io.video.to_uint8
            self.video[start : start + n] = x if self.video.dtype == torch.float32 else x.mul(255).to(torch.uint8)
        if self.progress is not None:
            self.progress(ProgressEvent("decode", start + n, self.num_frames))


class StreamingDecode:
    """The decode stage for latents that become final piece by piece (long video): :func:`decode`'s noise, tone
    mapping and output path, applied to each piece as it is :meth:`push` ed, through the VAE's cross-piece streaming
    decode (:class:`ltxv.model.vae_stream.DecodeStream`). The output equals :func:`decode` of the whole latents; the
    decode noise is drawn for the whole latent shape up front (latent-sized, as :func:`decode` draws it)."""

    def __init__(
        self,
        vae: VideoVAE,
        shape: tuple[int, ...],
        *,
        decode_timestep: float,
        decode_noise_scale: float | None,
        tone_map_ratio: float,
        streams: Streams,
        size: tuple[int, int],
        crop: tuple[int, int, int, int],
        num_frames: int,
        device: torch.device,
        progress: ProgressCallback | None = None,
        frames: FrameConsumer | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not can_stream(vae.decoder):
            raise RequestError("long video needs a VAE decoder that streams (this one has GroupNorm)")
        self.vae, self.tone_map_ratio, self.done = vae, tone_map_ratio, 0
        timestep, self.noise, self.scale = None, None, 0.0
        if vae.cfg.timestep_conditioning:
            self.scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
            self.noise = draw_decode_noise(torch.zeros((), device=device).expand(shape), streams.aux)
            timestep = torch.tensor([decode_timestep], dtype=torch.float32, device=device)
        self.output = _Output(size, crop, num_frames, device, frames, progress, dtype)
        t = vae.decoder.scaled_timestep(timestep)
        dtype = vae_dtype(vae)
        self.stream = DecodeStream(vae.decoder, shape, t, streams.aux, self.output.sink, dtype=dtype, device=device)

    def push(self, latents: torch.Tensor) -> None:
        """The next final normalised latent frames (1, C, n, H', W')."""
        n = latents.shape[2]
        if self.noise is not None:
            latents = blend_decode_noise(latents, self.noise[:, :, self.done : self.done + n], self.scale)
        self.done += n
        z = tone_map(latents, self.tone_map_ratio).to(vae_dtype(self.vae))
        self.stream.push(self.vae.denormalize(z))

    @property
    def video(self) -> torch.Tensor | None:
        return self.output.video
