"""Long video: a loop over temporal windows of one denoising pass, decoded as it goes (control-long.md §1).

The windows, their appended conditioning and the cross-fade are :mod:`ltxv.conditioning.window`; each window is one
pass of the shared :class:`~ltxv.pipelines.denoise.Denoiser` (guidance, hybrid schedules, step caching alike) under
:func:`~ltxv.sampling.samplers.sample_euler_ancestral_rf`, seeded ``seed + window start`` with diffusers' noise
layout, so the latents equal diffusers' ``LTXI2VLongMultiPromptPipeline`` for the same weights and seed. The image of
a frame-0 conditioning item (its VAE posterior mean) sits in place in the first window and is every window's
long-term guide. Later windows are matched to the first one's channel statistics (``adain_factor``).

Memory: the whole video's latents are small (60 s at 768x512 is 36 MB in float32); only latent frames that no later
window changes are decoded, window by window, through one streaming decode that continues across windows, and the
frames go to the caller's consumer (an mp4 writer) as they leave the decoder.

Where diffusers is wrong, ltxv differs: an overlap of 16 frames (2 latent frames) cross-fades one frame at 1/2
instead of appending an extra latent frame per window, and ``num_inference_steps = N`` runs N steps, not N - 1. A
multi-scale recipe runs one pass at the full size, its first pass's settings over both passes' timesteps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ltxv.conditioning.window import cross_fade, window_state
from ltxv.pipelines.media import load_request_media
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import GenerationRequest
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


def generate_long(
    pipe: Pipeline, checked: Plan, *, callback: ProgressCallback | None, frames: FrameConsumer | None
) -> GenerationResult:
    """The long video ``checked`` (a :class:`~ltxv.pipelines.preflight.Plan` with windows) on ``pipe``'s models."""
    from ltxv.pipelines.generate import GenerationResult

    request, windows = checked.request, checked.windows
    assert windows is not None
    m, vae, use = pipe.models, pipe.models.vae, pipe.residency.use
    height, width, num_frames = checked.size
    s, c = vae.spatial_compression, m.transformer.cfg.in_channels
    h, w, length = height // s, width // s, windows[-1][1]
    overlap = request.temporal_overlap_frames // vae.temporal_compression
    media = load_request_media(request, height, width, num_frames, checked.media)
    prompts = prompts_per_window(request, len(windows))
    with use(text_encoder=pipe.text_encoder):
        texts = {p: encode_text(pipe.text_encoder, p, request.negative_prompt) for p in dict.fromkeys(prompts)}
    if callback is not None:
        callback(ProgressEvent("text", 1, 1))
    image, strength = None, 0.0
    if media.conditioning:  # an image at frame 0 (the preflight refuses anything else)
        pixels, _, strength = media.conditioning[0]
    if strength > 0:  # strength 0 conditions nothing, as in diffusers
        with use(vae=vae):
            image = vae.encode(resize_frames(pixels, height, width).to(vae_dtype(vae))).float()  # (1, C, 1, h, w)
    ts = torch.tensor(checked.passes[0].timesteps, dtype=torch.float32)
    models = pipe.step_models(request, 0, len(ts))
    loras = pipe.pass_loras(request, 0)  # the first pass's LoRA set runs every window
    pipe.lora.check(loras)
    pipe.lora.apply(loras)
    device = pipe.device
    recipe = request.recipe
    plan = PassPlan(
        height, width, request.window_frames() or 0, request.frame_rate, recipe.first_pass, ts, recipe.stg_mode, 0
    )
    streams, out = Streams.from_seed(request.seed, device), output_settings(request, height, width)
    decoder = StreamingDecode(
        vae, (1, c, length, h, w), **out, streams=streams, device=device, progress=callback, frames=frames
    )
    video = torch.zeros(1, c, length, h, w, device=device)  # the whole video's latents, float32
    first: torch.Tensor | None = None
    for k, (a, b) in enumerate(windows):
        own = torch.zeros(1, c, b - a, h, w, device=device)
        if k == 0 and image is not None:
            own[:, :, :1] = image
        state = window_state(
            own,
            first_mask=1.0 - strength if k == 0 and image is not None else None,
            tail=video[:, :, a : a + overlap] if k > 0 and request.overlap_strength > 0 else None,
            tail_mask=1.0 - request.overlap_strength,
            guide=image,
            causal_fix=m.transformer.cfg.causal_temporal_positioning,
        )
        generator = torch.Generator(device).manual_seed(request.seed + a)
        noise = torch.randn((1, c, b - a + state.num_appended, h, w), generator=generator, device=device)
        call = pipe.transformer_call(request, 0)
        with pipe.residency.use_pass(dict(models)) as activate:
            where = {"window": (k, len(windows)), "call": call, "activate": activate, "progress": callback}
            own = run_window_pass(models, texts[prompts[k]], plan, state, noise, generator, **where)
        if first is None:
            video[:, :, a:b] = first = own
        else:
            new = own[:, :, 1:]  # the first frame stands for one pixel frame, not eight: dropped
            if request.adain_factor > 0:
                new = adain(new, first, request.adain_factor)
            video[:, :, a + 1 : b] = cross_fade(video[:, :, a + 1 : a + overlap], new, overlap - 1)
        final = windows[k + 1][0] + 1 if k + 1 < len(windows) else length  # later windows change frames from there
        with use(vae=vae):
            decoder.push(video[:, :, decoder.done : final])
    labels = tuple(label for label, _ in models)
    return GenerationResult(video=decoder.video, latents=video, step_models=(labels,))
