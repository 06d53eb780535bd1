"""The one request type: the Python API, the CLI and the job service all build a :class:`GenerationRequest`.

A request says *what* to generate (prompt, size, media, seed); its :class:`Recipe` says *how* (one pass or the
multi-scale two-pass recipe, the per-pass sampling and guidance settings). Recipes come from presets or the reference's
own YAML pipeline configs (``ltxv.pipelines.presets``). Validation lives here so every front door reports the same
clear errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
STG_MODES = ("attention_values", "attention_skip", "residual", "transformer_block")
# The reference CLI accepts these short aliases too (inference.py).
STG_ALIASES = {
    "stg_av": "attention_values",
    "stg_as": "attention_skip",
    "stg_r": "residual",
    "stg_t": "transformer_block",
}

Scalar = float
PerStep = tuple[float, ...]
BlockList = tuple[int, ...]


class RequestError(ValueError):
    """An impossible request (bad size, frame, strength, media placement, prompt type...)."""


@dataclass(frozen=True)
class PassSettings:
    """Sampling and guidance for one denoising pass (the keys of a reference ``first_pass:``/``second_pass:`` block,
    or of a base pipeline config).

    ``guidance_scale``, ``stg_scale``, ``rescaling_scale`` and ``skip_block_list`` are either one value for every step
    or per-step lists selected through ``guidance_timesteps`` (step at time t uses the first index i with
    ``guidance_timesteps[i] <= t``, else the last), exactly as the reference.
    """

    num_inference_steps: int = 20
    timesteps: tuple[float, ...] | None = None
    skip_initial_inference_steps: int = 0
    skip_final_inference_steps: int = 0
    guidance_scale: Scalar | PerStep = 1.0
    stg_scale: Scalar | PerStep = 0.0
    rescaling_scale: Scalar | PerStep = 1.0
    guidance_timesteps: tuple[float, ...] | None = None
    skip_block_list: BlockList | tuple[BlockList, ...] | None = None
    cfg_star_rescale: bool = False
    tone_map_compression_ratio: float = 0.0
    stochastic_sampling: bool = False

    def validate(self, num_layers: int | None = None) -> None:
        if self.timesteps is None and self.num_inference_steps < 1:
            raise RequestError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.timesteps is not None and not all(0.0 < t <= 1.0 for t in self.timesteps):
            raise RequestError(f"timesteps must lie in (0, 1], got {list(self.timesteps)}")
        if min(self.skip_initial_inference_steps, self.skip_final_inference_steps) < 0:
            raise RequestError("skip_initial/final_inference_steps must be >= 0")
        if not 0.0 <= self.tone_map_compression_ratio <= 1.0:
            raise RequestError(f"tone_map_compression_ratio must be in [0, 1], got {self.tone_map_compression_ratio}")
        lists = {
            k: v
            for k, v in (
                ("guidance_scale", self.guidance_scale),
                ("stg_scale", self.stg_scale),
                ("rescaling_scale", self.rescaling_scale),
            )
            if isinstance(v, tuple)
        }
        if self.skip_block_list and isinstance(self.skip_block_list[0], tuple):
            lists["skip_block_list"] = self.skip_block_list
        if lists and self.guidance_timesteps is None:
            raise RequestError(f"per-step lists {sorted(lists)} need guidance_timesteps")
        for k, v in lists.items():
            if self.guidance_timesteps is not None and len(v) != len(self.guidance_timesteps):
                raise RequestError(
                    f"{k} has {len(v)} entries but guidance_timesteps has {len(self.guidance_timesteps)}"
                )


@dataclass(frozen=True)
class Recipe:
    """How to generate: a reference pipeline config, parsed (see ``presets.recipe_from_yaml``)."""

    pipeline_type: Literal["base", "multi-scale"] = "base"
    first_pass: PassSettings = field(default_factory=PassSettings)
    second_pass: PassSettings | None = None  # multi-scale only
    downscale_factor: float = 0.6666666
    stg_mode: str = "attention_values"
    decode_timestep: float = 0.0
    decode_noise_scale: float | None = None  # None: equal to decode_timestep (the reference's rule)
    precision: str = "float32"  # "float32" | "bfloat16" | "mixed_precision" | "float8_e4m3fn"
    sampler: str = "from_checkpoint"  # "from_checkpoint" | "uniform" | "linear-quadratic"
    checkpoint_path: str | None = None
    spatial_upscaler_model_path: str | None = None
    text_encoder_model_name_or_path: str | None = None
    prompt_enhancement_words_threshold: int = 0  # accepted; prompt enhancement is not implemented (0 = off)

    def validate(self) -> None:
        if self.stg_mode not in STG_MODES:
            raise RequestError(
                f"stg_mode must be one of {list(STG_MODES)} (or {list(STG_ALIASES)}), got {self.stg_mode!r}"
            )
        if self.pipeline_type not in ("base", "multi-scale"):
            raise RequestError(f"pipeline_type must be 'base' or 'multi-scale', got {self.pipeline_type!r}")
        if self.pipeline_type == "multi-scale":
            if self.second_pass is None:
                raise RequestError("a multi-scale recipe needs a second_pass")
            if not 0.0 < self.downscale_factor <= 1.0:
                raise RequestError(f"downscale_factor must be in (0, 1], got {self.downscale_factor}")
        self.first_pass.validate()
        if self.second_pass is not None:
            self.second_pass.validate()

    @property
    def passes(self) -> tuple[PassSettings, ...]:
        return (self.first_pass,) if self.pipeline_type == "base" else (self.first_pass, self.second_pass)  # type: ignore[return-value]


Media = str | Path | torch.Tensor  # a path, or a (3, F, H, W) / (3, H, W) tensor in [-1, 1]


@dataclass(frozen=True)
class ConditioningMedia:
    """An image or video placed at pixel frame ``frame`` with ``strength`` in [0, 1] (1 = hard conditioning).

    Frame 0 with an image is image-to-video; with a video, forward extension. A later frame with an image is a
    keyframe; with a video (frame a multiple of 8), backward extension or an inserted segment."""

    media: Media
    frame: int = 0
    strength: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    height: int = 704
    width: int = 1216
    num_frames: int = 121
    frame_rate: float = 30.0
    seed: int = 171198
    conditioning: tuple[ConditioningMedia, ...] = ()
    input_media: Media | None = None  # video-to-video source
    denoise_strength: float | None = None  # V2V: start denoising at this noise level (None: the recipe's schedule)
    image_cond_noise_scale: float = 0.15
    media_preprocess: bool = True  # the reference's blur + H.264 CRF round trip on conditioning / V2V media
    recipe: Recipe = field(default_factory=Recipe)

    def validate(self) -> None:
        if not isinstance(self.prompt, str):
            raise RequestError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if not isinstance(self.negative_prompt, str):
            raise RequestError(f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        for name, v in (("height", self.height), ("width", self.width), ("num_frames", self.num_frames)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RequestError(f"{name} must be a positive integer, got {v!r}")
        if not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise RequestError(f"frame_rate must be > 0, got {self.frame_rate}")
        if not self.image_cond_noise_scale >= 0.0:
            raise RequestError(f"image_cond_noise_scale must be >= 0, got {self.image_cond_noise_scale}")
        for i, c in enumerate(self.conditioning):
            if not 0.0 <= c.strength <= 1.0:
                raise RequestError(f"conditioning item {i}: strength must be in [0, 1], got {c.strength}")
            if not 0 <= c.frame < self.num_frames:
                raise RequestError(
                    f"conditioning item {i}: start frame {c.frame} is outside the video (0..{self.num_frames - 1})"
                )
        if self.denoise_strength is not None:
            if self.input_media is None:
                raise RequestError("denoise_strength is for video-to-video: give input_media too")
            if not 0.0 < self.denoise_strength <= 1.0:
                raise RequestError(f"denoise_strength must be in (0, 1], got {self.denoise_strength}")
        self.recipe.validate()

    def with_recipe(self, recipe: Recipe) -> GenerationRequest:
        return replace(self, recipe=recipe)


def padded_size(height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """The reference CLI's padding: sizes up to a multiple of 32, frames up to 8n+1 (``((F-2)//8+1)*8+1``)."""
    return ((height - 1) // 32 + 1) * 32, ((width - 1) // 32 + 1) * 32, ((num_frames - 2) // 8 + 1) * 8 + 1


def as_tuple(v: float | Sequence[float] | None) -> float | tuple[float, ...] | None:
    return tuple(float(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else v  # type: ignore[return-value]
