"""Long video: a loop over temporal windows of each denoising pass, decoded as it goes (control-long.md §1).

The windows, their appended conditioning and the cross-fade are :mod:`ltxv.conditioning.window`; each window is one
pass of the shared :class:`~ltxv.pipelines.denoise.Denoiser` (guidance, hybrid schedules, LoRAs, step caching alike)
under :func:`~ltxv.sampling.samplers.sample_euler_ancestral_rf`, seeded ``seed + window start`` in diffusers' noise
layout: a one-pass recipe gives diffusers' ``LTXI2VLongMultiPromptPipeline`` latents. A frame-0 image (its VAE
posterior mean) sits in place in the first window and is every window's long-term guide; later windows are matched to
the first one's statistics (``adain_factor``). A multi-scale recipe runs the official long workflow: windows at the
first pass's size, the latent upsampler over the whole (small) latent video, then windows of the second pass refining
the upsampled latents from its first timestep, guided by them when a detailer IC-LoRA asks (``ControlVideo(None)``).

Memory: latent frames no later window changes are decoded after each window of the last pass, through one streaming
decode continuing across windows, straight to the caller's frame consumer (an mp4 writer). Where diffusers is wrong,
ltxv differs: an overlap of 16 frames cross-fades one frame at 1/2 instead of adding a latent frame per window, and
``num_inference_steps = N`` runs N steps, not N - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ltxv.conditioning.window import cross_fade, window_state
from ltxv.pipelines.denoise import StepModels, TextContext
from ltxv.pipelines.media import load_request_media
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import ControlVideo, GenerationRequest
from ltxv.pipelines.stages import (
    FrameConsumer,
    PassPlan,
    StreamingDecode,
    Streams,
    encode_text,
    output_settings,
    resize_frames,
    run_window_pass,
    vae_dtype,
)
from ltxv.sampling.latent_ops import adain

if TYPE_CHECKING:
    from ltxv.pipelines.generate import GenerationResult, Pipeline
    from ltxv.pipelines.preflight import Plan


def prompts_per_window(request: GenerationRequest, n: int) -> list[str]:
    texts = list(request.window_prompts) or [p.strip() for p in request.prompt.split("|")]
    return [texts[min(k, len(texts) - 1)] for k in range(n)]


@dataclass(frozen=True)
class WindowPass:
    """One pass of the window loop: its plan and step models, the image at its size (frame 0 of the first window
    and every window's long-term guide), and for a refining pass the latents it starts from and the detailer's."""

    plan: PassPlan
    models: StepModels
    image: torch.Tensor | None  # (1, C, 1, h, w)
    strength: float  # the image's
    init: torch.Tensor | None = None  # (1, C, F', h, w) the upsampled first pass
    guides: torch.Tensor | None = None  # the detailer IC-LoRA's guide latents (the same), or None
    guides_mask: float = 0.0


def generate_long(
    pipe: Pipeline,
    checked: Plan,
    *,
    callback: ProgressCallback | None,
    frames: FrameConsumer | None,
    video_dtype: torch.dtype = torch.float32,
) -> GenerationResult:
    """The long video ``checked`` (a :class:`~ltxv.pipelines.preflight.Plan` with windows) on ``pipe``'s models;
    ``frames`` and ``video_dtype`` as :meth:`Pipeline.generate` takes them."""
    from ltxv.pipelines.generate import GenerationResult

    request, windows, vae, use = checked.request, checked.windows, pipe.models.vae, pipe.residency.use
    assert windows is not None
    height, width, num_frames = checked.size
    media = load_request_media(request, height, width, num_frames, checked.media)
    prompts = prompts_per_window(request, len(windows))
    with use(text_encoder=pipe.text_encoder):
        texts = {p: encode_text(pipe.text_encoder, p, request.negative_prompt) for p in dict.fromkeys(prompts)}
    if callback is not None:
        callback(ProgressEvent("text", 1, 1))
    pixels, _, strength = media.conditioning[0] if media.conditioning else (None, 0, 0.0)
    detailer = next((c for c in request.conditioning if isinstance(c, ControlVideo)), None)
    s, last = pipe.models.vae.spatial_compression, checked.passes[-1]
    shape = (1, pipe.models.transformer.cfg.in_channels, windows[-1][1], last.height // s, last.width // s)
    streams, out = Streams.from_seed(request.seed, pipe.device), output_settings(request, height, width)
    decoder = StreamingDecode(
        vae, shape, **out, streams=streams, device=pipe.device, progress=callback, frames=frames, dtype=video_dtype
    )
    latents, used = None, []
    for i, p in enumerate(checked.passes):
        image = None
        if strength > 0:  # strength 0 conditions nothing, as in diffusers; the image at each pass's size
            with use(vae=vae):
                image = vae.encode(resize_frames(pixels, p.height, p.width).to(vae_dtype(vae))).float()
        init = None
        if latents is not None:  # the second pass of a multi-scale recipe refines the upsampled first
            with use(upsampler=pipe.models.upsampler):
                init = adain(pipe.models.upsampler(latents), latents)  # type: ignore[misc]
            if callback is not None:
                callback(ProgressEvent("upsample", 1, 1))
        ts = torch.tensor(p.timesteps, dtype=torch.float32)
        settings, n = request.recipe.passes[i], len(checked.passes)
        plan = PassPlan(p.height, p.width, num_frames, request.frame_rate, settings, ts, request.recipe.stg_mode, 0.0)
        plan = replace(plan, pass_index=i, num_passes=n)
        models = pipe.step_models(request, i, len(ts))
        pipe.lora.check(loras := pipe.pass_loras(request, i))
        pipe.lora.apply(loras)
        guided = detailer is not None and init is not None
        wp = WindowPass(
            plan, models, image, strength, init, init if guided else None, 1.0 - getattr(detailer, "strength", 1.0)
        )
        latents = run_windows(pipe, request, texts, prompts, windows, wp, decoder if i == n - 1 else None, callback)
        used.append(tuple(label for label, _ in models))
    return GenerationResult(video=decoder.video, latents=latents, step_models=tuple(used))  # type: ignore[arg-type]


def run_windows(
    pipe: Pipeline,
    request: GenerationRequest,
    texts: dict[str, TextContext],
    prompts: list[str],
    windows: tuple[tuple[int, int], ...],
    wp: WindowPass,
    decoder: StreamingDecode | None,
    callback: ProgressCallback | None,
) -> torch.Tensor:
    """One pass over the windows: the whole video's latents (1, C, F', H', W') float32, each window's final frames
    pushed to ``decoder`` (if given) as soon as no later window changes them."""
    device, vae, plan = pipe.device, pipe.models.vae, wp.plan
    s, tc = vae.spatial_compression, vae.temporal_compression
    c, h, w, length = pipe.models.transformer.cfg.in_channels, plan.height // s, plan.width // s, windows[-1][1]
    overlap = request.temporal_overlap_frames // tc
    video = torch.zeros(1, c, length, h, w, device=device)
    first: torch.Tensor | None = None
    seed = request.seed + plan.pass_index * length  # pass 1 draws diffusers' streams (seed + window start)
    for k, (a, b) in enumerate(windows):
        own = torch.zeros(1, c, b - a, h, w, device=device) if wp.init is None else wp.init[:, :, a:b].clone()
        if k == 0 and wp.image is not None:
            own[:, :, :1] = wp.image
        start = 0 if k == 0 else overlap  # the detailer guides the frames after the overlap (diffusers' rule)
        state = window_state(
            own,
            first_mask=1.0 - wp.strength if k == 0 and wp.image is not None else None,
            tail=video[:, :, a : a + overlap] if k > 0 and request.overlap_strength > 0 else None,
            tail_mask=1.0 - request.overlap_strength,
            guides=None if wp.guides is None else wp.guides[:, :, a + start : b],
            guides_start=start,
            guides_mask=wp.guides_mask,
            guide=wp.image,
            causal_fix=pipe.models.transformer.cfg.causal_temporal_positioning,
        )
        generator = torch.Generator(device).manual_seed(seed + a)
        noise = torch.randn((1, c, b - a + state.num_appended, h, w), generator=generator, device=device)
        t0 = 1.0 if wp.init is None else float(plan.timesteps[0])
        with pipe.residency.use_pass(dict(wp.models)) as activate:
            call = pipe.transformer_call(request, plan.pass_index)
            where = {"window": (k, len(windows)), "call": call, "activate": activate, "progress": callback}
            own = run_window_pass(wp.models, texts[prompts[k]], plan, state, noise, generator, t0=t0, **where)
        if first is None:
            video[:, :, a:b] = first = own
        else:
            new = own[:, :, 1:]  # the first frame stands for one pixel frame, not eight: dropped
            if request.adain_factor > 0 and new[0, 0].numel() > 1:  # one value per channel has no std
                new = adain(new, first, request.adain_factor)
            video[:, :, a + 1 : b] = cross_fade(video[:, :, a + 1 : a + overlap], new, overlap - 1)
        if decoder is not None:
            final = windows[k + 1][0] + 1 if k + 1 < len(windows) else length  # later windows change from there
            with pipe.residency.use(vae=vae):
                decoder.push(video[:, :, decoder.done : final])
    return video
