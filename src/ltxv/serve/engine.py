"""The real engine: a loaded :class:`Pipeline` kept warm, driven through ``Pipeline.generate``'s step callback.

The step callback says (step, steps, t); the worker also wants the pass and a denoised estimate for the preview. The
pass is counted here (each pass numbers its steps from 0). The estimate comes from the transformer call of the step,
read by a forward hook (nothing is changed, nothing is copied): ``x0 = x_t - t v`` of the conditional branch, the
video's tokens (after any appended conditioning tokens) on the pass's latent grid. A richer callback from the denoise
loop (the pass index and the guided velocity, or x0 itself) would replace the hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltxv.model.patchify import unpatchify
from ltxv.pipelines.denoise import per_step_guidance
from ltxv.pipelines.generate import Pipeline
from ltxv.pipelines.request import GenerationRequest, Recipe, padded_size
from ltxv.sampling.guidance import active_branches
from ltxv.serve.preview import LatentRGB, cached_latent_rgb
from ltxv.serve.worker import Step

log = logging.getLogger(__name__)


class PipelineEngine:
    def __init__(
        self, pipe: Pipeline, models: tuple[str, ...], default_recipe: Recipe, preview: LatentRGB | None = None
    ) -> None:
        self.pipe, self.models, self.default_recipe, self.preview_map = pipe, models, default_recipe, preview

    def _passes(self, request: GenerationRequest) -> list[tuple[tuple[int, int, int], list[float], list[int]]]:
        """Per pass: the latent grid (f, h, w), the timesteps, and the index of the conditional branch per step."""
        pipe = self.pipe
        vae = pipe.models.vae
        frames = padded_size(request.height, request.width, request.num_frames)[2]
        out = []
        for i, (h, w) in enumerate(pipe.pass_sizes(request)):
            from_source = i == 0 and request.input_media is not None
            ts = pipe.pass_timesteps(request, i, h, w, from_source).tolist()
            guidance = per_step_guidance(request.recipe.passes[i], ts)
            cond = [active_branches(g.cfg, g.stg).index("cond") for g in guidance]
            grid = (
                (frames - 1) // vae.temporal_compression + 1,
                h // vae.spatial_compression,
                w // vae.spatial_compression,
            )
            out.append((grid, ts, cond))
        return out

    def plan(self, request: GenerationRequest) -> list[tuple[int, float]]:
        """Steps per pass, each step weighted by its tokens (the cost of a transformer call grows with them)."""
        return [(len(ts), float(f * h * w)) for (f, h, w), ts, _ in self._passes(request)]

    def generate(self, request: GenerationRequest, on_step: Callable[[Step], None]) -> torch.Tensor:
        passes = self._passes(request)
        seen: dict[str, Any] = {}

        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            seen.update(tokens=args[0], timesteps=args[2], velocity=output)

        current = {"pass": -1}

        def x0() -> torch.Tensor | None:
            if "tokens" not in seen or not 0 <= current["pass"] < len(passes):
                return None
            (f, h, w), _, cond = passes[current["pass"]]
            branch = cond[min(current["step"], len(cond) - 1)]
            n = f * h * w
            x, t, v = seen["tokens"][branch, -n:], seen["timesteps"][branch], seen["velocity"][branch, -n:]
            t = t[-n:] if t.numel() > 1 else t
            estimate = x.float() - t.float().reshape(-1, 1) * v.float()  # (N, C)
            return unpatchify(estimate[None], f, h, w)

        def callback(i: int, n: int, t: float) -> None:
            if i == 0:
                current["pass"] += 1
            current["step"] = i
            on_step(Step(current["pass"], len(passes), i, n, t, latents=x0))

        handle = self.pipe.models.transformer.register_forward_hook(hook, with_kwargs=True)
        try:
            return self.pipe.generate(request, callback=callback).video
        finally:
            handle.remove()
            seen.clear()

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
) -> PipelineEngine:
    """Load the pipeline (``load_pipeline``'s arguments in ``models``) and its preview map (fitted once per model,
    cached in ``preview_cache``; no previews when it is None)."""
    from ltxv.pipelines.generate import load_pipeline

    pipe = load_pipeline(**models)
    preview = None
    if preview_cache is not None:
        with pipe.residency.use(vae=pipe.models.vae):
            preview = cached_latent_rgb(pipe.models.vae, models["checkpoint"], preview_cache)
    return PipelineEngine(pipe, names, default_recipe, preview)
