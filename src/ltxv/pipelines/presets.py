"""Recipes by name, and the reference's YAML pipeline configs parsed strictly into :class:`Recipe`.

A reference config is read the way the reference CLI runs it (study §1.2): top-level sampling keys apply to every pass,
a multi-scale config's ``first_pass:`` / ``second_pass:`` dicts override them per pass, and a sampling key nobody sets
takes the reference pipeline's call default (guidance 4.5, STG 1.0, rescale 0.7, 20 steps), not ours. Keys the
reference never reads are an error, not a silent no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from ltxv.pipelines.loras import parse_lora_entry
from ltxv.pipelines.request import STG_ALIASES, Lora, PassSettings, Recipe, RequestError, check_cache
from ltxv.runtime import capability

log = logging.getLogger(__name__)

# The reference pipeline's ``__call__`` defaults: what a config that leaves a sampling key out actually runs with.
REFERENCE_PASS_DEFAULTS: dict[str, Any] = {
    "num_inference_steps": 20,
    "guidance_scale": 4.5,
    "stg_scale": 1.0,
    "rescaling_scale": 0.7,
}
PRECISIONS = ("float32", "bfloat16", "mixed_precision", "float8_e4m3fn")
SAMPLERS = {"from_checkpoint": "from_checkpoint", "uniform": "uniform", "linear-quadratic": "linear-quadratic"}
SAMPLERS |= {"linear_quadratic": "linear-quadratic", "linearquadratic": "linear-quadratic"}

_PASS_KEYS = {f.name for f in fields(PassSettings)}
# Pass keys ltxv adds to the reference's config format (the reference has no LoRA support, no step caching).
LTXV_PASS_KEYS = {"loras", "cache"}
# Read by the reference but without effect here: prompt enhancement is not implemented.
_IGNORED_KEYS = {"prompt_enhancer_image_caption_model_name_or_path", "prompt_enhancer_llm_model_name_or_path"}
_TOP_KEYS = {
    "pipeline_type",
    "checkpoint_path",
    "downscale_factor",
    "spatial_upscaler_model_path",
    "stg_mode",
    "decode_timestep",
    "decode_noise_scale",
    "text_encoder_model_name_or_path",
    "precision",
    "sampler",
    "prompt_enhancement_words_threshold",
    "first_pass",
    "second_pass",
    *_IGNORED_KEYS,
}


def _number(key: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RequestError(f"{key}: expected a number, got {v!r}")
    return float(v)


def _int(key: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{key}: expected an integer, got {v!r}")
    return v


def _bool(key: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise RequestError(f"{key}: expected true or false, got {v!r}")
    return v


def _numbers(key: str, v: object) -> tuple[float, ...] | None:
    if v is None:
        return None
    if not isinstance(v, list | tuple):
        raise RequestError(f"{key}: expected a list of numbers, got {v!r}")
    return tuple(_number(key, x) for x in v)


def _scale(key: str, v: object) -> float | tuple[float, ...]:
    return _numbers(key, v) if isinstance(v, list | tuple) else _number(key, v)  # type: ignore[return-value]


def _loras(key: str, v: object) -> tuple[Lora, ...] | None:
    """A pass's LoRA set: a list of ``{path: ..., scale: ...}`` mappings or ``PATH[:SCALE]`` strings."""
    if v is None:
        return None
    if not isinstance(v, list | tuple):
        raise RequestError(f"{key}: expected a list of LoRAs, got {v!r}")
    return tuple(parse_lora_entry(f"{key}[{i}]", e) for i, e in enumerate(v))


def _blocks(key: str, v: object) -> tuple[int, ...] | tuple[tuple[int, ...], ...] | None:
    """One block list for every step, or one per ``guidance_timesteps`` entry (the reference tells them apart by
    whether the first element is a list)."""
    if v is None:
        return None
    if not isinstance(v, list | tuple):
        raise RequestError(f"{key}: expected a list of block indices or a list of such lists, got {v!r}")
    if v and isinstance(v[0], list | tuple):
        if not all(isinstance(b, list | tuple) for b in v):
            raise RequestError(f"{key}: mixes block indices and lists of block indices: {v!r}")
        return tuple(tuple(_int(key, i) for i in b) for b in v)
    return tuple(_int(key, i) for i in v)


def _cache(key: str, v: object) -> str | None:
    spec = _str(key, v)
    check_cache(spec, key)
    return spec


_PASS_PARSERS: dict[str, Callable[[str, object], object]] = {
    "num_inference_steps": _int,
    "timesteps": _numbers,
    "skip_initial_inference_steps": _int,
    "skip_final_inference_steps": _int,
    "guidance_scale": _scale,
    "stg_scale": _scale,
    "rescaling_scale": _scale,
    "guidance_timesteps": _numbers,
    "skip_block_list": _blocks,
    "cfg_star_rescale": _bool,
    "tone_map_compression_ratio": _number,
    "stochastic_sampling": _bool,
    "loras": _loras,
    "cache": _cache,
}


def _unknown(keys: object, allowed: set[str], where: str) -> None:
    extra = sorted(set(keys) - allowed)  # type: ignore[call-overload]
    if extra:
        raise RequestError(f"unknown pipeline config key(s){where}: {', '.join(map(str, extra))}")


def _pass(shared: Mapping[str, object], own: object, where: str) -> PassSettings:
    if not isinstance(own, Mapping):
        raise RequestError(f"{where}: expected a mapping of sampling settings, got {own!r}")
    _unknown(own, _PASS_KEYS, f" in {where}")
    parsed = {k: _PASS_PARSERS[k](k, v) for k, v in {**REFERENCE_PASS_DEFAULTS, **shared}.items()}
    parsed |= {k: _PASS_PARSERS[k](f"{where}.{k}", v) for k, v in own.items()}
    return PassSettings(**parsed)  # type: ignore[arg-type]


def _str(key: str, v: object) -> str | None:
    if v is not None and not isinstance(v, str):
        raise RequestError(f"{key}: expected a string, got {v!r}")
    return v


def _choice(key: str, v: object, table: Mapping[str, str]) -> str:
    name = _str(key, v)
    if name is None or name.lower() not in table:
        raise RequestError(f"{key}: expected one of {sorted(table)}, got {v!r}")
    return table[name.lower()]


def recipe_from_dict(cfg: Mapping[str, object]) -> Recipe:
    """Parse a reference pipeline config (the dict its YAML file loads to)."""
    if not isinstance(cfg, Mapping):
        raise RequestError(f"a pipeline config must be a mapping, got {type(cfg).__name__}")
    _unknown(cfg, _TOP_KEYS | _PASS_KEYS, "")
    pipeline_type = cfg.get("pipeline_type") or "base"
    shared = {k: v for k, v in cfg.items() if k in _PASS_KEYS}
    if pipeline_type == "multi-scale":
        missing = [k for k in ("first_pass", "second_pass") if cfg.get(k) is None]
        if missing:
            raise RequestError(f"a multi-scale pipeline config needs {' and '.join(missing)}")
        first, second = _pass(shared, cfg["first_pass"], "first_pass"), _pass(shared, cfg["second_pass"], "second_pass")
    else:
        if "first_pass" in cfg or "second_pass" in cfg:
            raise RequestError(
                f"first_pass/second_pass are for multi-scale configs, not pipeline_type {pipeline_type!r}"
            )
        first, second = _pass(shared, {}, "config"), None
    threshold = _int("prompt_enhancement_words_threshold", cfg.get("prompt_enhancement_words_threshold", 0))
    if threshold > 0:
        log.warning(
            "prompt_enhancement_words_threshold=%d is ignored: ltxv does not implement prompt enhancement", threshold
        )
    noise = cfg.get("decode_noise_scale")
    stg_mode = (_str("stg_mode", cfg.get("stg_mode")) or "attention_values").lower()
    recipe = Recipe(
        pipeline_type=pipeline_type,  # type: ignore[arg-type]
        first_pass=first,
        second_pass=second,
        downscale_factor=_number("downscale_factor", cfg.get("downscale_factor", Recipe.downscale_factor)),
        stg_mode=STG_ALIASES.get(stg_mode, stg_mode),
        decode_timestep=_number("decode_timestep", cfg.get("decode_timestep", 0.0)),
        decode_noise_scale=None if noise is None else _number("decode_noise_scale", noise),
        precision=_choice("precision", cfg.get("precision", "float32"), {p: p for p in PRECISIONS}),
        sampler=_choice("sampler", cfg.get("sampler") or "from_checkpoint", SAMPLERS),
        checkpoint_path=_str("checkpoint_path", cfg.get("checkpoint_path")),
        spatial_upscaler_model_path=_str("spatial_upscaler_model_path", cfg.get("spatial_upscaler_model_path")),
        text_encoder_model_name_or_path=_str(
            "text_encoder_model_name_or_path", cfg.get("text_encoder_model_name_or_path")
        ),
        prompt_enhancement_words_threshold=threshold,
    )
    recipe.validate()
    return recipe


def recipe_from_yaml(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RequestError(f"cannot read pipeline config {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise RequestError(f"pipeline config {path} is not valid YAML: {e}") from e
    try:
        return recipe_from_dict(cfg)
    except RequestError as e:
        raise RequestError(f"{path}: {e}") from e


# --- the released recipes (configs/*.yaml of the reference repository) -------------------------------------------

_T5 = "PixArt-alpha/PixArt-XL-2-1024-MS"
_UPSCALER = "ltxv-spatial-upscaler-0.9.8.safetensors"
# LinearQuadratic(8) rounded to 4 decimals, split across the two passes (study §3.3).
_DISTILLED_PASS_1 = PassSettings(
    timesteps=(1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725),
    guidance_scale=1.0,
    stg_scale=0.0,
    rescaling_scale=1.0,
    skip_block_list=(42,),
)
_DISTILLED_PASS_2 = replace(_DISTILLED_PASS_1, timesteps=(0.9094, 0.725, 0.4219))
_DEV_PASS_1 = PassSettings(
    num_inference_steps=30,
    skip_final_inference_steps=3,
    cfg_star_rescale=True,
    guidance_timesteps=(1.0, 0.996, 0.9933, 0.985, 0.9767, 0.9008, 0.618),
    guidance_scale=(1.0, 1.0, 6.0, 8.0, 6.0, 1.0, 1.0),
    stg_scale=(0.0, 0.0, 4.0, 4.0, 4.0, 2.0, 1.0),
    rescaling_scale=(1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0),
    skip_block_list=((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,)),
)
_DEV_PASS_2 = PassSettings(
    num_inference_steps=30,
    skip_initial_inference_steps=17,
    cfg_star_rescale=True,
    guidance_timesteps=(1.0,),
    guidance_scale=(1.0,),
    stg_scale=(1.0,),
    rescaling_scale=(1.0,),
    skip_block_list=(27,),
)
_BASE = Recipe(
    decode_timestep=0.05, decode_noise_scale=0.025, precision="bfloat16", text_encoder_model_name_or_path=_T5
)


def _multi_scale(stem: str, first: PassSettings, second: PassSettings) -> dict[str, Recipe]:
    bf16 = replace(
        _BASE,
        pipeline_type="multi-scale",
        first_pass=first,
        second_pass=second,
        checkpoint_path=f"{stem}.safetensors",
        spatial_upscaler_model_path=_UPSCALER,
    )
    fp8 = replace(bf16, checkpoint_path=f"{stem}-fp8.safetensors", precision="float8_e4m3fn")
    return {stem: bf16, f"{stem}-fp8": fp8}


# prompt_enhancement_words_threshold is 120 in the reference files; 0 here because enhancement is not implemented.
PRESETS: dict[str, Recipe] = {
    **_multi_scale("ltxv-2b-0.9.8-distilled", _DISTILLED_PASS_1, _DISTILLED_PASS_2),
    **_multi_scale(
        "ltxv-13b-0.9.8-distilled", _DISTILLED_PASS_1, replace(_DISTILLED_PASS_2, tone_map_compression_ratio=0.6)
    ),
    **_multi_scale("ltxv-13b-0.9.8-dev", _DEV_PASS_1, _DEV_PASS_2),
    "ltxv-2b-0.9.6-distilled": replace(
        _BASE,
        checkpoint_path="ltxv-2b-0.9.6-distilled-04-25.safetensors",
        first_pass=PassSettings(num_inference_steps=8, stochastic_sampling=True),
    ),
    "ltxv-2b-0.9.6-dev": replace(
        _BASE,
        checkpoint_path="ltxv-2b-0.9.6-dev-04-25.safetensors",
        first_pass=PassSettings(
            num_inference_steps=40, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,)
        ),
    ),
}


# What ``ltxv generate`` runs without --preset, and what a request made in Python defaults to.
DEFAULT_PRESET = "ltxv-2b-0.9.8-distilled"

# --- the demo model shipped with the package ---------------------------------------------------------------------

# Trained here by training/train_demo.py on procedural clips (one coloured shape moving on a dark background); see
# its MODEL_CARD.md. Files are package data, so the preset runs offline.
DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "ltxv-demo"
DEMO_PRESET = "ltxv-demo"
PRESETS[DEMO_PRESET] = Recipe(
    pipeline_type="multi-scale",
    # The first pass at half the size and the second at the full size: the two sizes the model was trained at
    # (measured against the reference's two thirds in MODEL_CARD.md).
    downscale_factor=0.5,
    first_pass=PassSettings(num_inference_steps=20, guidance_scale=3.0),
    second_pass=PassSettings(timesteps=(0.6, 0.45, 0.3, 0.15), guidance_scale=3.0),
    decode_timestep=0.05,
    decode_noise_scale=0.025,
    precision="float32",  # small enough that bf16 would not pay, and the same result on every CPU
    checkpoint_path=str(DEMO_DIR / "ltxv-demo.safetensors"),
    spatial_upscaler_model_path=str(DEMO_DIR / "ltxv-demo-spatial-upscaler.safetensors"),
    text_encoder_model_name_or_path=str(DEMO_DIR / "text_encoder_t5"),
)
# (height, width, frames) a preset's model was trained for, where the reference defaults (704x1216x121) do not fit.
NATIVE_SIZES: dict[str, tuple[int, int, int]] = {DEMO_PRESET: (128, 128, 25)}


def get_preset(name: str) -> Recipe:
    try:
        return PRESETS[name]
    except KeyError:
        raise RequestError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A preset name or a pipeline config file. A missing ``configs/<preset>.yaml`` (the reference CLI's spelling)
    falls back to the built-in preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return recipe_from_yaml(path)
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    if path.suffix in (".yaml", ".yml") and path.stem in PRESETS:
        log.info("%s not found; using the built-in preset %s", path, path.stem)
        return PRESETS[path.stem]
    raise RequestError(
        f"{name_or_path} is neither a pipeline config file nor a preset; known presets: {', '.join(PRESETS)}"
    )


def pipeline_args(
    recipe: Recipe,
    *,
    checkpoint: str | None = None,
    upsampler: str | None = None,
    text_encoder: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``load_pipeline`` for a recipe, any model overridden. The default dtype is bfloat16 when
    the recipe asks for reduced precision and the device computes it fast (CUDA, or a CPU with native bf16 dot
    products, :func:`ltxv.runtime.capability.cpu_has_fast_bf16`), else float32 (emulated bf16 is slower than fp32).
    """
    checkpoint = checkpoint or recipe.checkpoint_path
    if checkpoint is None:
        raise RequestError("no checkpoint: the pipeline config has no checkpoint_path, so give one", param="checkpoint")
    if upsampler is None and recipe.pipeline_type == "multi-scale":
        upsampler = recipe.spatial_upscaler_model_path
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is not None and dtype not in ("float32", "bfloat16"):
        raise RequestError(f"dtype must be float32 or bfloat16, got {dtype!r}", param="dtype")
    return {
        "checkpoint": checkpoint,
        "upsampler": upsampler,
        "text_encoder": text_encoder or recipe.text_encoder_model_name_or_path,
        "dtype": getattr(torch, dtype) if dtype else default_dtype(device, recipe.precision),
        "device": device,
    }


def default_dtype(device: str | torch.device, precision: str = "bfloat16") -> torch.dtype:
    """The compute dtype when none is asked for, the same for the CLI and the API: bfloat16 when the recipe's
    ``precision`` is reduced and ``device`` computes bfloat16 fast (CUDA, or a CPU with native bf16 dot products,
    :func:`ltxv.runtime.capability.cpu_has_fast_bf16`), else float32 (emulated bf16 is slower than fp32)."""
    kind = str(device).split(":")[0]
    fast_bf16 = kind == "cuda" or (kind == "cpu" and capability.cpu_has_fast_bf16())
    return torch.bfloat16 if fast_bf16 and precision != "float32" else torch.float32
