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
from ltxv.model.transformer import Transformer
from ltxv.pipelines.denoise import CallTransformer, StepModels, per_step_guidance
from ltxv.pipelines.media import load_request_media
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import GenerationRequest, RequestError, padded_size
from ltxv.pipelines.stages import PassMedia, PassPlan, Streams, decode, encode_text, pass_timesteps, run_pass
from ltxv.runtime.compile import CompileStats, compile_transformer
from ltxv.runtime.estimate import MemoryEstimate, PassShape, estimate_memory
from ltxv.runtime.residency import Residency
from ltxv.sampling.guidance import active_branches
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
        residency: str = "resident",
        compile: bool = False,
    ) -> None:
        """``residency``: see :mod:`ltxv.runtime.residency` (the models are expected where its ``home`` says, as
        :func:`load_pipeline` puts them). ``compile``: ``torch.compile`` the transformer; the compile time is kept
        apart in ``compile_stats``."""
        self.models = models
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.residency = Residency(self.device, residency)
        self.compile_stats: CompileStats | None = compile_transformer(models.transformer) if compile else None
        # Every transformer the pipeline can run, by label; they share the VAE, T5, upsampler and latent space.
        self.transformers: dict[str, Transformer] = {"main": models.transformer}

    def step_models(self, request: GenerationRequest, pass_index: int, steps: int) -> StepModels:
        """(label, transformer) for every step of pass ``pass_index``: the main transformer throughout."""
        return [("main", self.models.transformer)] * steps

    def transformer_call(self, request: GenerationRequest, pass_index: int) -> CallTransformer | None:
        """How the denoiser of a pass evaluates the transformer (None: a plain call). Made anew for every pass, so
        a wrapper with state (step caching) starts clean in each."""
        return None

    def scheduler_config(self, sampler: str) -> SchedulerConfig:
        if sampler in ("from_checkpoint", "", None):
            return self.models.config.scheduler
        return SchedulerConfig(sampler="Uniform" if sampler.lower() == "uniform" else "LinearQuadratic")

    def pass_sizes(self, request: GenerationRequest) -> list[tuple[int, int]]:
        """(height, width) of each denoising pass: the padded size, or the multi-scale recipe's two sizes."""
        height, width, _ = padded_size(request.height, request.width, request.num_frames)
        recipe = request.recipe
        if recipe.pipeline_type == "base":
            return [(height, width)]
        s = self.models.vae.spatial_compression
        h1 = int(height * recipe.downscale_factor) // s * s
        w1 = int(width * recipe.downscale_factor) // s * s
        if min(h1, w1) < s:
            raise RequestError(f"{height}x{width} is too small for multi-scale: the first pass would be {h1}x{w1}")
        return [(h1, w1), (2 * h1, 2 * w1)]

    def pass_timesteps(self, request: GenerationRequest, i: int, h: int, w: int, from_source: bool) -> torch.Tensor:
        """The timesteps pass ``i`` runs at (h, w); ``from_source``: it starts from an encoded source video."""
        m, recipe = self.models, request.recipe
        frames = padded_size(request.height, request.width, request.num_frames)[2]
        s = m.vae.spatial_compression
        n_tokens = ((frames - 1) // m.vae.temporal_compression + 1) * (h // s) * (w // s)
        scheduler = self.scheduler_config(recipe.sampler)
        ts = pass_timesteps(scheduler, recipe.passes[i], n_tokens, m.config.allowed_inference_steps)
        if request.denoise_strength is not None and from_source:
            ts = ts[ts <= request.denoise_strength + 1e-6]
            if ts.numel() == 0:
                raise RequestError(f"denoise_strength {request.denoise_strength} is below every step of the schedule")
        return ts

    def memory_estimate(self, request: GenerationRequest, media: PassMedia | None = None) -> MemoryEstimate:
        """The device-memory estimate of ``request`` under this pipeline's residency mode (closed forms, instant;
        ``media``: the request's loaded media, loaded here if not given)."""
        request.validate()
        height, width, frames = padded_size(request.height, request.width, request.num_frames)
        media = media or load_request_media(request, height, width, frames)
        s = self.models.vae.spatial_compression
        shapes = []
        for i, (h, w) in enumerate(self.pass_sizes(request)):
            from_source = i == 0 and media.source is not None
            steps = self.pass_timesteps(request, i, h, w, from_source).tolist()
            guidance = per_step_guidance(request.recipe.passes[i], steps)
            # Appended tokens: one latent frame per later keyframe, the two prefix latent frames per later video.
            appended = sum((1 if m.shape[2] == 1 else 2) for m, frame, _ in media.conditioning if frame > 0)
            shapes.append(
                PassShape(
                    height=h,
                    width=w,
                    branches=max(len(active_branches(g.cfg, g.stg)) for g in guidance),
                    per_token_timesteps=bool(media.conditioning),
                    appended_tokens=appended * (h // s) * (w // s),
                    encode_frames=tuple(m.shape[2] for m, _, _ in media.conditioning)
                    + ((frames,) if from_source else ()),
                )
            )
        return estimate_memory(self.models, self.text_encoder, self.residency.mode, num_frames=frames, passes=shapes)

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, *, callback: ProgressCallback | None = None) -> GenerationResult:
        """Run ``request``; ``callback`` receives a :class:`ProgressEvent` per unit of work (raise from it to stop)."""
        request.validate()
        recipe = request.recipe
        m = self.models
        if recipe.pipeline_type == "multi-scale" and m.upsampler is None:
            raise RequestError("the multi-scale recipe needs a latent upsampler (give an upsampler file)")
        height, width, frames = padded_size(request.height, request.width, request.num_frames)
        sizes = self.pass_sizes(request)
        media = load_request_media(request, height, width, frames)
        log.info("%s", self.memory_estimate(request, media).summary())
        streams = Streams.from_seed(request.seed, self.device)
        use = self.residency.use
        with use(text_encoder=self.text_encoder):
            text = encode_text(self.text_encoder, request.prompt, request.negative_prompt)
        if callback is not None:
            callback(ProgressEvent("text", 1, 1))

        def one_pass(i: int, pm: PassMedia, init: torch.Tensor | None) -> torch.Tensor:
            h, w = sizes[i]
            ts = self.pass_timesteps(request, i, h, w, pm.source is not None)
            plan = PassPlan(
                h,
                w,
                frames,
                request.frame_rate,
                recipe.passes[i],
                ts,
                recipe.stg_mode,
                request.image_cond_noise_scale,
                pass_index=i,
                num_passes=len(sizes),
            )
            models = self.step_models(request, i, len(ts))
            call = self.transformer_call(request, i)
            with use(transformer=m.transformer, vae=m.vae if pm.source is not None or pm.conditioning else None):
                return run_pass(models, m.vae, text, plan, pm, init, streams, call=call, progress=callback)

        if len(sizes) == 1:
            latents = one_pass(0, media, None)
        else:
            low = one_pass(0, media, None)
            with use(upsampler=m.upsampler):
                up = adain(m.upsampler(low), low)  # type: ignore[misc]
            if callback is not None:
                callback(ProgressEvent("upsample", 1, 1))
            latents = one_pass(1, PassMedia(conditioning=media.conditioning), up)
        last = recipe.passes[-1]
        top, left = (height - request.height) // 2, (width - request.width) // 2
        with use(vae=m.vae):
            video = decode(
                m.vae,
                latents,
                decode_timestep=recipe.decode_timestep,
                decode_noise_scale=recipe.decode_noise_scale,
                tone_map_ratio=last.tone_map_compression_ratio,
                streams=streams,
                size=(height, width),
                crop=(top, left, request.height, request.width),
                num_frames=request.num_frames,
                progress=callback,
            )
        return GenerationResult(video=video, latents=latents)


def load_pipeline(
    checkpoint: str | Path,
    *,
    upsampler: str | Path | None = None,
    text_encoder: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    residency: str = "resident",
    quantize: str | None = None,
    compile: bool = False,
) -> Pipeline:
    """Load the models once; call ``generate`` as often as needed. Names of released files resolve via the hub.

    ``residency``: "resident", "offload-text" (T5 on the CPU except while it encodes) or "sequential" (every model on
    the CPU except during its stage), :mod:`ltxv.runtime.residency`. ``quantize="fp8"``: the transformer blocks'
    linears quantised to float8_e4m3fn as they are read (fp8 files load as stored anyway). ``compile``:
    ``torch.compile`` the transformer (opt-in; its compile time is reported apart, ``Pipeline.compile_stats``).
    The VAE encoder is read from the checkpoint on the first request that encodes media (``lazy_vae_encoder``)."""
    policy = Residency(device, residency)  # validates the mode before anything is read
    from ltxv.weights.hub import resolve

    ckpt = resolve(checkpoint, "checkpoint")
    up = resolve(upsampler, "upsampler") if upsampler is not None else None
    text = resolve(text_encoder or "PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder")
    home = policy.home("transformer")
    models = load_models(ckpt, upsampler=up, dtype=dtype, device=home, quantize=quantize, lazy_vae_encoder=True)
    encoder = TextEncoder.from_pretrained(text, dtype=dtype, device=policy.home("text_encoder"))
    return Pipeline(models, encoder, device, residency=residency, compile=compile)
