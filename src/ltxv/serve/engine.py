"""The real engine: a loaded :class:`Pipeline` kept warm, driven through ``Pipeline.generate``'s progress callback.

Every :class:`ltxv.pipelines.progress.ProgressEvent` becomes a worker :class:`Step`: the denoising steps with their
pass and the step's denoised prediction (the preview), then the upsample and the decode's blocks of frames (the
progress bar's tail). The worker raises from the callback to stop a job (a cancel, a lost lease, a shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltxv.pipelines.generate import Pipeline
from ltxv.pipelines.loras import LoraRegistry
from ltxv.pipelines.progress import ProgressEvent
from ltxv.pipelines.request import GenerationRequest, Recipe, padded_size
from ltxv.serve.preview import LatentRGB, cached_latent_rgb
from ltxv.serve.worker import Step

log = logging.getLogger(__name__)


class PipelineEngine:
    def __init__(
        self,
        pipe: Pipeline,
        models: tuple[str, ...],
        default_recipe: Recipe,
        preview: LatentRGB | None = None,
        loras: LoraRegistry | None = None,
    ) -> None:
        self.pipe, self.models, self.default_recipe, self.preview_map = pipe, models, default_recipe, preview
        self.loras = loras  # the LoRAs a job may name; the pipeline switches its set per job (Pipeline.set_loras)

    def plan(self, request: GenerationRequest) -> list[tuple[int, float]]:
        """Steps per pass, each step weighted by its tokens (the cost of a transformer call grows with them)."""
        pipe, vae = self.pipe, self.pipe.models.vae
        frames = (padded_size(request.height, request.width, request.num_frames)[2] - 1) // vae.temporal_compression + 1
        out = []
        for i, (h, w) in enumerate(pipe.pass_sizes(request)):
            steps = len(pipe.pass_timesteps(request, i, h, w, i == 0 and request.input_media is not None))
            out.append((steps, float(frames * (h // vae.spatial_compression) * (w // vae.spatial_compression))))
        return out

    def generate(self, request: GenerationRequest, on_step: Callable[[Step], None]) -> torch.Tensor:
        def callback(e: ProgressEvent) -> None:
            if e.stage == "denoise":
                on_step(Step(e.pass_index, e.num_passes, e.done - 1, e.total, e.t or 0.0, latents=lambda: e.denoised))
            elif e.stage in ("upsample", "decode"):
                on_step(Step(e.pass_index, e.num_passes, e.done - 1, e.total, 0.0, stage=e.stage))

        # uint8 frames, what the mp4 stores: a quarter of the float32 video's memory
        return self.pipe.generate(request, callback=callback, video_dtype=torch.uint8).video

    def preview(self, latents: torch.Tensor | None) -> np.ndarray | None:
        if latents is None or self.preview_map is None:
            return None
        return self.preview_map(latents)


def load_engine(
    models: dict[str, Any],
    *,
    names: tuple[str, ...],
    default_recipe: Recipe,
    preview_cache: Path | None,
    fit_clips: int = 8,
    lora_dir: str | Path | None = None,
) -> PipelineEngine:
    """Load the pipeline (``load_pipeline``'s arguments in ``models``) and its preview map (fitted once per model,
    cached in ``preview_cache``; no previews when it is None). ``lora_dir``: the folder of LoRAs jobs may name."""
    from ltxv.pipelines.generate import load_pipeline

    pipe = load_pipeline(**models)
    preview = None
    if preview_cache is not None:
        with pipe.residency.use(vae=pipe.models.vae):
            preview = cached_latent_rgb(pipe.models.vae, models["checkpoint"], preview_cache, clips=fit_clips)
    loras = None if lora_dir is None else LoraRegistry(lora_dir)
    return PipelineEngine(pipe, names, default_recipe, preview, loras)
