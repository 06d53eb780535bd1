"""The one request type: the Python API, the CLI and the job service all build a :class:`GenerationRequest`.

A request says *what* to generate (prompt, size, media, seed); its :class:`Recipe` says *how* (one pass or the
multi-scale two-pass recipe, the per-pass sampling and guidance settings). Recipes come from presets or the reference's
own YAML pipeline configs (``ltxv.pipelines.presets``); a request's default recipe is the default preset's, the one
``ltxv generate`` runs. Validation lives here so every front door reports the same clear errors: every field's type
and range, each error a :class:`RequestError` naming the field (``param``) and the problem in one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from ltxv.errors import LtxvError
from ltxv.runtime.cache import CacheConfig, CacheSpecError, parse_cache

DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
STG_MODES = ("attention_values", "attention_skip", "residual", "transformer_block")
# The reference CLI accepts these short aliases too (inference.py).
STG_ALIASES = {
    "stg_av": "attention_values",
    "stg_as": "attention_skip",
    "stg_r": "residual",
    "stg_t": "transformer_block",
}
PRECISIONS = ("float32", "bfloat16", "mixed_precision", "float8_e4m3fn")
SAMPLER_NAMES = ("from_checkpoint", "uniform", "linear-quadratic")
# What a torch generator's manual_seed takes: any 64-bit pattern, signed or not.
SEED_RANGE = (-(2**63), 2**64 - 1)
# Frames per second a request may ask for: the rate the transformer's time positions are scaled by and the mp4's rate.
FRAME_RATE_RANGE = (1.0, 240.0)

# Long video (ltxv.pipelines.long_video): a request without ``temporal_tile_frames`` is one clip up to this many frames
# (the longest the released models run in one pass, as the reference does) and runs in windows of LONG_TILE_FRAMES
# beyond; with it, any request longer than one window runs in windows.
MAX_CLIP_FRAMES = 257
LONG_TILE_FRAMES = 80

Scalar = float
PerStep = tuple[float, ...]
BlockList = tuple[int, ...]


class RequestError(LtxvError):
    """An impossible request (bad size, frame, strength, media placement, prompt type...). ``param`` names the
    request field at fault (``"height"``, ``"conditioning[0].strength"``, ``"recipe.first_pass.timesteps"``)."""


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _got(v: object) -> str:
    text = repr(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(v).__name__})" if not isinstance(v, int | float) or isinstance(v, bool) else text


def _int(v: object, param: str, low: int | None = None, high: int | None = None, what: str = "an integer") -> None:
    if not _is_int(v) or (low is not None and v < low) or (high is not None and v > high):  # type: ignore[operator]
        raise RequestError(f"{param} must be {what}, got {_got(v)}", param=param)


def _real(v: object, param: str, low: float, high: float, what: str, *, open_low: bool = False) -> None:
    if not _is_real(v) or v > high or v < low or (open_low and v == low):  # type: ignore[operator]
        raise RequestError(f"{param} must be {what}, got {_got(v)}", param=param)


def _scale(v: object, param: str) -> None:
    """One finite number >= 0 for every step, or a non-empty list of them (one per guidance_timesteps entry)."""
    values = v if isinstance(v, tuple | list) and v else (v,)
    if not all(_is_real(x) and x >= 0 for x in values):
        raise RequestError(f"{param} must be a number >= 0 or a list of them, got {_got(v)}", param=param)


def _bool(v: object, param: str) -> None:
    if not isinstance(v, bool):
        raise RequestError(f"{param} must be True or False, got {_got(v)}", param=param)


@dataclass(frozen=True)
class Lora:
    """A LoRA file (safetensors, any key style ``ltxv.lora`` reads) and its scale: every linear it names becomes
    ``W + scale * (alpha / rank) * B @ A`` (merged into the weights; several LoRAs add up)."""

    path: str | Path
    scale: float = 1.0

    def validate(self, param: str) -> None:
        if not isinstance(self.path, str | Path) or not str(self.path).strip():
            raise RequestError(f"{param}.path must be a file path, got {_got(self.path)}", param=f"{param}.path")
        _real(self.scale, f"{param}.scale", -math.inf, math.inf, "a finite number")


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
    # The pass's complete LoRA set (() = none); None: the pipeline's own set (``load(loras=)``, ``set_loras``).
    loras: tuple[Lora, ...] | None = None
    cache: str | CacheConfig | None = None  # step caching of this pass (ltxv's own key): "fbc:0.1", "static:2,20,3"

    def validate(self, where: str = "recipe.first_pass") -> None:
        """``where``: the field path in messages (``recipe.second_pass`` for the second pass)."""
        p = f"{where}."
        check_cache(self.cache, p + "cache")
        if self.timesteps is None:
            _int(self.num_inference_steps, p + "num_inference_steps", 1, what="an integer >= 1")
        else:
            ts = self.timesteps
            if not isinstance(ts, tuple | list) or not ts or not all(_is_real(t) and 0.0 < t <= 1.0 for t in ts):
                raise RequestError(
                    f"{p}timesteps must be a non-empty list in (0, 1], got {_got(ts)}", param=p + "timesteps"
                )
        for k in ("skip_initial_inference_steps", "skip_final_inference_steps"):
            _int(getattr(self, k), p + k, 0, what="an integer >= 0")
        for k in ("guidance_scale", "stg_scale", "rescaling_scale"):
            _scale(getattr(self, k), p + k)
        for k in ("cfg_star_rescale", "stochastic_sampling"):
            _bool(getattr(self, k), p + k)
        _real(self.tone_map_compression_ratio, p + "tone_map_compression_ratio", 0.0, 1.0, "a number in [0, 1]")
        gt = self.guidance_timesteps
        if gt is not None and (not isinstance(gt, tuple | list) or not gt or not all(_is_real(t) for t in gt)):
            raise RequestError(
                f"{p}guidance_timesteps must be a non-empty list of numbers, got {_got(gt)}",
                param=p + "guidance_timesteps",
            )
        blocks = self.skip_block_list
        nested = bool(blocks) and isinstance(blocks, tuple | list) and isinstance(blocks[0], tuple | list)  # type: ignore[index]
        if blocks is not None:
            rows = blocks if nested else (blocks,)
            if not isinstance(blocks, tuple | list) or not all(
                isinstance(r, tuple | list) and all(_is_int(i) and i >= 0 for i in r)
                for r in rows  # type: ignore[union-attr]
            ):
                raise RequestError(
                    f"{p}skip_block_list must be a list of block indices >= 0 or a list of such lists, got {_got(blocks)}",
                    param=p + "skip_block_list",
                )
        lists = {k: getattr(self, k) for k in ("guidance_scale", "stg_scale", "rescaling_scale")}
        lists = {k: v for k, v in lists.items() if isinstance(v, tuple | list)}
        if nested:
            lists["skip_block_list"] = blocks
        if lists and gt is None:
            raise RequestError(
                f"{p}: per-step lists {sorted(lists)} need guidance_timesteps", param=p + "guidance_timesteps"
            )
        for k, v in lists.items():
            if gt is not None and len(v) != len(gt):
                raise RequestError(f"{p}{k} has {len(v)} entries but guidance_timesteps has {len(gt)}", param=p + k)
        if self.loras is not None:
            if not isinstance(self.loras, tuple | list):
                raise RequestError(
                    f"{p}loras must be a tuple of Lora or None, got {_got(self.loras)}", param=p + "loras"
                )
            for i, lora in enumerate(self.loras):
                if not isinstance(lora, Lora):
                    raise RequestError(
                        f"{p}loras[{i}] must be a Lora(path, scale), got {_got(lora)}", param=f"{p}loras[{i}]"
                    )
                lora.validate(f"{p}loras[{i}]")


def default_recipe() -> Recipe:
    """The default preset's recipe (``ltxv.pipelines.presets.DEFAULT_PRESET``): what ``ltxv generate`` runs without
    ``--preset``, so a request made in Python without a recipe generates the same video."""
    from ltxv.pipelines.presets import DEFAULT_PRESET, get_preset

    return get_preset(DEFAULT_PRESET)


@dataclass(frozen=True)
class Recipe:
    """How to generate: a reference pipeline config, parsed (see ``presets.recipe_from_yaml``). ``Recipe()`` itself
    is the reference pipeline's bare one-pass default; requests default to :func:`default_recipe` instead."""

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
                f"recipe.stg_mode must be one of {list(STG_MODES)} (or {list(STG_ALIASES)}), got {_got(self.stg_mode)}",
                param="recipe.stg_mode",
            )
        if self.pipeline_type not in ("base", "multi-scale"):
            raise RequestError(
                f"recipe.pipeline_type must be 'base' or 'multi-scale', got {_got(self.pipeline_type)}",
                param="recipe.pipeline_type",
            )
        if not isinstance(self.first_pass, PassSettings):
            raise RequestError(
                f"recipe.first_pass must be a PassSettings, got {_got(self.first_pass)}", param="recipe.first_pass"
            )
        if self.pipeline_type == "multi-scale":
            if not isinstance(self.second_pass, PassSettings):
                raise RequestError(
                    f"a multi-scale recipe needs a second_pass (PassSettings), got {_got(self.second_pass)}",
                    param="recipe.second_pass",
                )
            _real(self.downscale_factor, "recipe.downscale_factor", 0.0, 1.0, "a number in (0, 1]", open_low=True)
        _real(self.decode_timestep, "recipe.decode_timestep", 0.0, 1.0, "a number in [0, 1]")
        if self.decode_noise_scale is not None:
            _real(self.decode_noise_scale, "recipe.decode_noise_scale", 0.0, 1.0, "None or a number in [0, 1]")
        for name, allowed in (("precision", PRECISIONS), ("sampler", SAMPLER_NAMES)):
            if getattr(self, name) not in allowed:
                raise RequestError(
                    f"recipe.{name} must be one of {list(allowed)}, got {_got(getattr(self, name))}",
                    param=f"recipe.{name}",
                )
        for name in ("checkpoint_path", "spatial_upscaler_model_path", "text_encoder_model_name_or_path"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str | Path):
                raise RequestError(f"recipe.{name} must be a path or None, got {_got(v)}", param=f"recipe.{name}")
        _int(
            self.prompt_enhancement_words_threshold,
            "recipe.prompt_enhancement_words_threshold",
            0,
            what="an integer >= 0",
        )
        self.first_pass.validate("recipe.first_pass")
        if self.pipeline_type == "multi-scale":
            self.second_pass.validate("recipe.second_pass")  # type: ignore[union-attr]

    @property
    def passes(self) -> tuple[PassSettings, ...]:
        return (self.first_pass,) if self.pipeline_type == "base" else (self.first_pass, self.second_pass)  # type: ignore[return-value]

    def with_loras(self, loras: Sequence[Lora] | None) -> Recipe:
        """The recipe with ``loras`` as every pass's LoRA set (None: the pipeline's own set)."""
        chosen = None if loras is None else tuple(loras)
        second = None if self.second_pass is None else replace(self.second_pass, loras=chosen)
        return replace(self, first_pass=replace(self.first_pass, loras=chosen), second_pass=second)


Media = str | Path | torch.Tensor  # a path, or a (3, F, H, W) / (3, H, W) float tensor in [-1, 1]


@dataclass(frozen=True)
class ConditioningMedia:
    """An image or video placed at pixel frame ``frame`` with ``strength`` in [0, 1] (1 = hard conditioning).

    Frame 0 with an image is image-to-video; with a video, forward extension. A later frame with an image is a
    keyframe; with a video (frame a multiple of 8), backward extension or an inserted segment."""

    media: Media
    frame: int = 0
    strength: float = 1.0


def _media(v: object, param: str) -> None:
    if isinstance(v, torch.Tensor):
        return  # its dtype, shape and values are checked with the media (pipelines.media.check_media_tensor)
    if not isinstance(v, str | Path) or not str(v).strip():
        hint = (
            " (save it to a file, or pass a (3, H, W) float tensor in [-1, 1])" if "Image" in type(v).__name__ else ""
        )
        raise RequestError(
            f"{param} must be a file path or a (3, F, H, W) / (3, H, W) float tensor in [-1, 1], got {_got(v)}{hint}",
            param=param,
        )


CONTROL_PREPROCESSORS = ("canny",)


@dataclass(frozen=True)
class ControlVideo:
    """An IC-LoRA control (reference) video: depth, pose, canny edges, or a video to refine (detailer).

    Encoded (posterior mean) at each of its passes' size and the video's frame count, its clean latents enter that
    pass as extra tokens at the video tokens' positions, at timestep 0 (``strength`` 1; below 1 they start at noise
    level ``1 - strength`` like other appended items), never change, and are cut off before decoding. A path is
    centre-cropped to the requested aspect and resized to the requested size (then to each pass's size); a longer
    video is trimmed to the video's frame count, a shorter one is refused. ``preprocess="canny"`` turns an ordinary
    video into the edge video the canny IC-LoRA reads (OpenCV, the Trainer's thresholds). ``passes``: the 0-based
    passes it conditions (default the first, as the official control workflow). ``media=None`` is the pass's own
    starting latents (a detailer pass: the upsampled first pass, or a video-to-video source)."""

    media: Media | None
    strength: float = 1.0
    passes: tuple[int, ...] = (0,)
    preprocess: str | None = None

    def validate(self, p: str, request: GenerationRequest) -> None:
        """``p``: the field path in messages (``conditioning[1]``)."""
        if self.media is not None:
            _media(self.media, f"{p}.media")
        _real(self.strength, f"{p}.strength", 0.0, 1.0, "a number in (0, 1]", open_low=True)
        n = len(request.recipe.passes)
        passes = self.passes
        if not isinstance(passes, tuple | list) or not passes or not all(_is_int(i) and 0 <= i < n for i in passes):
            raise RequestError(
                f"{p}.passes must name passes of the recipe (0..{n - 1}), got {_got(passes)}", param=f"{p}.passes"
            )
        if self.preprocess is not None and self.preprocess not in CONTROL_PREPROCESSORS:
            raise RequestError(
                f"{p}.preprocess must be None or one of {list(CONTROL_PREPROCESSORS)}, got {_got(self.preprocess)}",
                param=f"{p}.preprocess",
            )
        if self.media is None:
            if self.preprocess is not None:
                raise RequestError(f"{p}: a pass's own latents cannot be preprocessed", param=f"{p}.preprocess")
            if 0 in passes and request.input_media is None:
                raise RequestError(
                    f"{p}: media=None guides a pass with its own starting latents, but pass 0 starts from noise "
                    "(give input_media, or guide the second pass of a multi-scale recipe)",
                    param=f"{p}.passes",
                )


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    height: int = 704
    width: int = 1216
    num_frames: int = 121
    frame_rate: float = 30.0
    seed: int = 171198
    conditioning: tuple[ConditioningMedia | ControlVideo, ...] = ()  # ControlVideo: IC-LoRA control
    input_media: Media | None = None  # video-to-video source
    denoise_strength: float | None = None  # V2V: start denoising at this noise level (None: the recipe's schedule)
    image_cond_noise_scale: float = 0.15
    media_preprocess: bool = True  # the reference's blur + H.264 CRF round trip on conditioning / V2V media
    recipe: Recipe = field(default_factory=default_recipe)
    # Long video: windows of this many pixel frames (a multiple of 8; None: see MAX_CLIP_FRAMES), overlapping by
    # temporal_overlap_frames, each conditioned on the previous one's last latents at overlap_strength and matched
    # to the first window's statistics by adain_factor. Per-window prompts: window_prompts, else the prompt split
    # on "|" (window k takes entry min(k, n - 1)).
    temporal_tile_frames: int | None = None
    temporal_overlap_frames: int = 24
    overlap_strength: float = 0.5
    adain_factor: float = 0.25
    window_prompts: tuple[str, ...] = ()
    # Which transformer runs which step (ltxv.pipelines.hybrid): "13b:4,2b", or the JSON form '[["13B", 4], ...]'.
    transformer_schedule: str | None = None
    cache: str | CacheConfig | None = None  # step caching of every pass, over the recipe's own ("off": none)

    def cache_config(self, pass_index: int) -> CacheConfig | None:
        """The step-caching policy of pass ``pass_index``: the request's if it sets one, else the recipe's."""
        if self.cache is not None:
            return check_cache(self.cache, "cache")
        where = f"recipe.{('first', 'second')[pass_index]}_pass.cache"
        return check_cache(self.recipe.passes[pass_index].cache, where)

    def validate(self) -> None:
        """Every field's type and range; the media are checked against the files later (the preflight)."""
        for name in ("prompt", "negative_prompt"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise RequestError(f"{name} must be a string, got {_got(v)}", param=name)
            if "\x00" in v:
                raise RequestError(f"{name} contains a NUL character", param=name)
        if not self.prompt.strip():
            raise RequestError("prompt is empty", param="prompt")
        for name in ("height", "width", "num_frames"):
            _int(getattr(self, name), name, 1, what="a positive integer")
        lo, hi = FRAME_RATE_RANGE
        _real(self.frame_rate, "frame_rate", lo, hi, f"a number of frames per second in [{lo:g}, {hi:g}]")
        _int(self.seed, "seed", *SEED_RANGE, what="an integer in [-2^63, 2^64 - 1]")
        _real(self.image_cond_noise_scale, "image_cond_noise_scale", 0.0, math.inf, "a number >= 0")
        _bool(self.media_preprocess, "media_preprocess")
        if not isinstance(self.conditioning, tuple | list):
            raise RequestError(
                f"conditioning must be a tuple of ConditioningMedia (or ControlVideo), got {_got(self.conditioning)}",
                param="conditioning",
            )
        for i, c in enumerate(self.conditioning):
            p = f"conditioning[{i}]"
            if isinstance(c, ControlVideo):
                continue  # checked once the recipe is (its passes index the recipe's)
            if not isinstance(c, ConditioningMedia):
                raise RequestError(
                    f"{p} must be a ConditioningMedia(media, frame, strength) or a ControlVideo(media), got {_got(c)}",
                    param=p,
                )
            _media(c.media, f"{p}.media")
            _int(c.frame, f"{p}.frame", what="an integer")
            if not 0 <= c.frame < self.num_frames:
                raise RequestError(
                    f"{p}: start frame {c.frame} is outside the video (0..{self.num_frames - 1})", param=f"{p}.frame"
                )
            _real(c.strength, f"{p}.strength", 0.0, 1.0, "a number in [0, 1]")
        if self.input_media is not None:
            _media(self.input_media, "input_media")
        if self.transformer_schedule is not None:
            from ltxv.pipelines.hybrid import parse_schedule

            try:
                parse_schedule(self.transformer_schedule)
            except ValueError as e:
                raise RequestError(f"transformer_schedule: {e}", param="transformer_schedule") from None
        if self.denoise_strength is not None:
            if self.input_media is None:
                raise RequestError(
                    "denoise_strength is for video-to-video: give input_media too", param="denoise_strength"
                )
            _real(self.denoise_strength, "denoise_strength", 0.0, 1.0, "a number in (0, 1]", open_low=True)
        check_cache(self.cache, "cache")
        if not isinstance(self.recipe, Recipe):
            raise RequestError(
                f"recipe must be a Recipe (e.g. presets.get_preset(name)), got {_got(self.recipe)}", param="recipe"
            )
        self.recipe.validate()
        for i, c in enumerate(self.conditioning):
            if isinstance(c, ControlVideo):
                c.validate(f"conditioning[{i}]", self)
        self._validate_long()

    def _validate_long(self) -> None:
        tile, overlap = self.temporal_tile_frames, self.temporal_overlap_frames
        for name, v, low in (("temporal_tile_frames", tile, 16), ("temporal_overlap_frames", overlap, 8)):
            if v is not None and (not _is_int(v) or v < low or v % 8):
                raise RequestError(f"{name} must be a multiple of 8 and at least {low}, got {_got(v)}", param=name)
        if overlap >= (tile or LONG_TILE_FRAMES):
            raise RequestError(
                f"temporal_overlap_frames ({overlap}) must be smaller than temporal_tile_frames "
                f"({tile or LONG_TILE_FRAMES})",
                param="temporal_overlap_frames",
            )
        for name in ("overlap_strength", "adain_factor"):
            _real(getattr(self, name), name, 0.0, 1.0, "a number in [0, 1]")
        prompts = self.window_prompts
        if not isinstance(prompts, tuple | list) or not all(isinstance(p, str) for p in prompts):
            raise RequestError(f"window_prompts must be a list of strings, got {_got(prompts)}", param="window_prompts")
        if self.transformer_schedule is not None and not isinstance(self.transformer_schedule, str | list | tuple):
            raise RequestError(
                f"transformer_schedule must be a string, got {_got(self.transformer_schedule)}",
                param="transformer_schedule",
            )
        if self.window_frames() is None:
            return
        if self.input_media is not None:
            raise RequestError(
                "a long video cannot be video-to-video (no input_media); shorten it to one clip", param="input_media"
            )
        last = len(self.recipe.passes) - 1
        controls = [c for c in self.conditioning if isinstance(c, ControlVideo)]
        if any(c.media is not None or last == 0 or tuple(c.passes) != (last,) for c in controls):
            raise RequestError(
                "a long video takes no IC-LoRA control video, only the detailer's guide (media None) of a multi-scale "
                "recipe's second pass",
                param="conditioning",
            )
        items = [c for c in self.conditioning if not isinstance(c, ControlVideo)]
        if len(items) > 1 or any(c.frame != 0 for c in items):
            raise RequestError(
                "a long video takes at most one conditioning item: an image at frame 0", param="conditioning"
            )

    def window_frames(self) -> int | None:
        """The pixel frames of each window when this request is a long video, None when it is one clip."""
        frames = padded_size(self.height, self.width, self.num_frames)[2]
        tile = self.temporal_tile_frames
        if tile is None:
            return LONG_TILE_FRAMES if frames > MAX_CLIP_FRAMES else None
        return tile if (frames - 1) // 8 + 1 > tile // 8 else None  # more latent frames than a window holds

    def with_recipe(self, recipe: Recipe) -> GenerationRequest:
        return replace(self, recipe=recipe)


def as_request(request: Any) -> GenerationRequest:
    """``request`` if it is a :class:`GenerationRequest`, validated; a clear error for anything else (a dict, a
    prompt string)."""
    if not isinstance(request, GenerationRequest):
        hint = " (build one: ltxv.GenerationRequest(prompt, ...))"
        raise RequestError(f"expected a GenerationRequest, got {_got(request)}{hint}", param=None)
    request.validate()
    return request


def check_cache(spec: object, param: str) -> CacheConfig | None:
    """A cache spec parsed (:func:`ltxv.runtime.cache.parse_cache`); a bad one is a :class:`RequestError` naming
    ``param``."""
    try:
        return parse_cache(spec)  # type: ignore[arg-type]
    except CacheSpecError as e:
        raise RequestError(f"{param}: {e}", param=param) from None


def padded_size(height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """The reference CLI's padding: sizes up to a multiple of 32, frames up to 8n+1 (``((F-2)//8+1)*8+1``)."""
    return ((height - 1) // 32 + 1) * 32, ((width - 1) // 32 + 1) * 32, ((num_frames - 2) // 8 + 1) * 8 + 1


def as_tuple(v: float | Sequence[float] | None) -> float | tuple[float, ...] | None:
    return tuple(float(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else v  # type: ignore[return-value]
