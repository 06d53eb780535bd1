"""The generation API: ``load_pipeline(...)`` keeps the models loaded; ``Pipeline.generate(request)`` runs any mode.

T2V, I2V, keyframes, extension and V2V differ only in the media a request carries (conditioning items, a source
video); one pass or two (multi-scale) is the recipe's choice. Multi-scale follows the reference (study §4.8): pass 1 at
``int(x * downscale) // 32 * 32``, latent upsampler, AdaIN to the pass-1 latents, pass 2 at twice the pass-1 size
re-noised to its first timestep, decode, bilinear resize to the requested (padded) size.

Where the reference is wrong, ltxv does the right thing: video-to-video under multi-scale encodes the source at the
pass-1 size and starts pass 1 from it (the reference encodes it at full size, starts at t = 1 and asserts in pass 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ltxv.config import SchedulerConfig
from ltxv.pipelines.denoise import StepCallback
from ltxv.pipelines.media import load_request_media
from ltxv.pipelines.request import GenerationRequest, RequestError, padded_size
from ltxv.pipelines.stages import PassMedia, Streams, decode, encode_text, pass_timesteps, resize_frames, run_pass
from ltxv.runtime.residency import Residency
from ltxv.sampling.latent_ops import adain
from ltxv.text.t5 import TextEncoder
from ltxv.weights.load import Models, load_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationResult:
    video: torch.Tensor  # (F, H, W, 3) float in [0, 1], cropped to the requested size and frame count
    latents: torch.Tensor  # (1, C, F', H', W') normalised latents of the last pass


class Pipeline:
    def __init__(
        self,
        models: Models,
        text_encoder: TextEncoder,
        device: torch.device | str = "cpu",
        *,
        offload_text_encoder: bool = False,
    ) -> None:
        self.models = models
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.residency = Residency(self.device, offload_text_encoder=offload_text_encoder)

    def scheduler_config(self, sampler: str) -> SchedulerConfig:
        if sampler in ("from_checkpoint", "", None):
            return self.models.config.scheduler
        return SchedulerConfig(sampler="Uniform" if sampler.lower() == "uniform" else "LinearQuadratic")

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, *, callback: StepCallback | None = None) -> GenerationResult:
        request.validate()
        recipe = request.recipe
        m = self.models
        if recipe.pipeline_type == "multi-scale" and m.upsampler is None:
            raise RequestError("the multi-scale recipe needs a latent upsampler (give an upsampler file)")
        height, width, frames = padded_size(request.height, request.width, request.num_frames)
        media = load_request_media(request, height, width, frames)
        streams = Streams.from_seed(request.seed, self.device)
        self.residency.text_encoder_ready(self.text_encoder)
        text = encode_text(self.text_encoder, request.prompt, request.negative_prompt)
        self.residency.text_encoder_done(self.text_encoder)
        scheduler = self.scheduler_config(recipe.sampler)
        allowed = m.config.allowed_inference_steps
        s = m.vae.spatial_compression

        def one_pass(i: int, h: int, w: int, pm: PassMedia, init: torch.Tensor | None) -> torch.Tensor:
            settings = recipe.passes[i]
            n_tokens = ((frames - 1) // m.vae.temporal_compression + 1) * (h // s) * (w // s)
            ts = pass_timesteps(scheduler, settings, n_tokens, allowed)
            if request.denoise_strength is not None and pm.source is not None:
                ts = ts[ts <= request.denoise_strength + 1e-6]
                if ts.numel() == 0:
                    raise RequestError(
                        f"denoise_strength {request.denoise_strength} is below every step of the schedule"
                    )
            return run_pass(
                m.transformer,
                m.vae,
                text,
                settings,
                ts,
                height=h,
                width=w,
                num_frames=frames,
                frame_rate=request.frame_rate,
                media=pm,
                init_latents=init,
                streams=streams,
                stg_mode=recipe.stg_mode,
                image_cond_noise_scale=request.image_cond_noise_scale,
                callback=callback,
            )

        if recipe.pipeline_type == "base":
            latents = one_pass(0, height, width, media, None)
        else:
            h1 = int(height * recipe.downscale_factor) // s * s
            w1 = int(width * recipe.downscale_factor) // s * s
            if min(h1, w1) < s:
                raise RequestError(f"{height}x{width} is too small for multi-scale: the first pass would be {h1}x{w1}")
            low = one_pass(0, h1, w1, media, None)
            up = adain(m.upsampler(low), low)  # type: ignore[misc]
            latents = one_pass(1, 2 * h1, 2 * w1, PassMedia(conditioning=media.conditioning), up)
        last = recipe.passes[-1]
        video = decode(
            m.vae,
            latents,
            decode_timestep=recipe.decode_timestep,
            decode_noise_scale=recipe.decode_noise_scale,
            tone_map_ratio=last.tone_map_compression_ratio,
            streams=streams,
        )
        video = resize_frames(video, height, width)
        top, left = (height - request.height) // 2, (width - request.width) // 2
        video = video[0, :, : request.num_frames, top : top + request.height, left : left + request.width]
        return GenerationResult(video=video.permute(1, 2, 3, 0).contiguous(), latents=latents)


def load_pipeline(
    checkpoint: str | Path,
    *,
    upsampler: str | Path | None = None,
    text_encoder: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    offload_text_encoder: bool = False,
) -> Pipeline:
    """Load the models once; call ``generate`` as often as needed. Names of released files resolve via the hub.
    ``offload_text_encoder`` keeps T5 on the CPU except while it encodes."""
    from ltxv.weights.hub import resolve

    ckpt = resolve(checkpoint, "checkpoint")
    up = resolve(upsampler, "upsampler") if upsampler is not None else None
    text = resolve(text_encoder or "PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder")
    models = load_models(ckpt, upsampler=up, dtype=dtype, device=device)
    encoder = TextEncoder.from_pretrained(text, dtype=dtype, device=device)
    return Pipeline(models, encoder, device, offload_text_encoder=offload_text_encoder)
