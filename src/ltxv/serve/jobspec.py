"""The wire format of a create request, as a job spec (JSON, stored with the job) and as a :class:`GenerationRequest`.

``parse_fields`` turns the form fields (multipart strings, or JSON values) into a spec, strictly: the API refuses
where the CLI pads (``size`` multiples of 32, ``num_frames`` 8n+1, each with the nearest valid value in the message),
caps what this server accepts (:class:`Limits`), and names the field at fault (:class:`FieldError`). ``to_request``
builds the same :class:`GenerationRequest` the CLI builds from the spec (its defaults are the request's, i.e. the
CLI's), with uploaded media as server-side files. The API and the worker both call it, so a job that was accepted is
the request that runs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ltxv.pipelines.loras import LoraRegistry
from ltxv.pipelines.presets import PRESETS
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, Lora, Recipe, RequestError

MEDIA_FIELDS = ("input_reference", "input_media")  # file parts with a fixed meaning; `conditioning` names others
# The recipe settings a request may change: the first pass's step count, every pass's guidance scalars.
STEP_FIELDS = {"num_inference_steps": int, "guidance_scale": float, "stg_scale": float, "rescaling_scale": float}
FIELDS = (
    "prompt",
    "model",
    "size",
    "seconds",
    "num_frames",
    "fps",
    "seed",
    "negative_prompt",
    "preset",
    "image_cond_noise_scale",
    "denoise_strength",
    "media_preprocess",
    "conditioning",
    *STEP_FIELDS,
    *(LONG_FIELDS := ("temporal_tile_frames", "temporal_overlap_frames", "overlap_strength", "adain_factor")),
    "window_prompts",
    "loras",
    "cache",
    "transformer_schedule",
)
_PART = re.compile(r"^[A-Za-z0-9_]{1,32}$")
MAX_SEED = 2**63 - 1


class FieldError(RequestError):
    """A request field that cannot be accepted; ``param`` names it (the wire name)."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Limits:
    """What this server accepts (``ltxv serve --max-...``); every refusal names the limit."""

    max_pixels: int = 1920 * 1088  # width x height of the output
    max_frames: int = 257
    max_prompt_chars: int = 2000  # T5 reads 256 tokens (about 1000 characters of English); longer is refused
    max_steps: int = 200
    max_conditioning: int = 8
    max_upload_bytes: int = 100 * 2**20  # the whole request body
    max_media_pixels: int = 4096 * 4096  # one decoded frame of an uploaded image or video
    max_media_frames: int = 1024


def nearest_multiple(x: int, m: int) -> int:
    return max(m, math.floor(x / m + 0.5) * m)


def nearest_frames(n: int) -> int:
    return max(1, math.floor((n - 1) / 8 + 0.5) * 8 + 1)


def _text(name: str, v: Any, limit: int, *, required: bool = False) -> str:
    if not isinstance(v, str):
        raise FieldError(name, f"{name} must be a string")
    if required and not v.strip():
        raise FieldError(name, f"{name} must not be empty")
    if len(v) > limit:
        raise FieldError(name, f"{name} has {len(v)} characters; this server accepts at most {limit}")
    return v


def _parse_int(name: str, v: Any, lo: int, hi: int, form: bool = True) -> int:
    if form and isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d{1,20}\s*", v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise FieldError(name, f"{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise FieldError(name, f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _parse_float(name: str, v: Any, lo: float, hi: float, *, open_low: bool = False, form: bool = True) -> float:
    if form and isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise FieldError(name, f"{name} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise FieldError(name, f"{name} must be a finite number, got {v!r}")
    if not (lo < v if open_low else lo <= v) or v > hi:
        raise FieldError(name, f"{name} must be in {'(' if open_low else '['}{lo}, {hi}], got {v}")
    return float(v)


def _bool(name: str, v: Any, form: bool = True) -> bool:
    if isinstance(v, bool):
        return v
    if form and isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    raise FieldError(name, f"{name} must be true or false, got {v!r}")


def _size(v: Any, limits: Limits) -> tuple[int, int]:
    if not isinstance(v, str) or not (m := re.fullmatch(r"(\d{1,5})x(\d{1,5})", v.strip())):
        raise FieldError("size", f"size must be WIDTHxHEIGHT, e.g. 768x512, got {v!r}")
    w, h = int(m[1]), int(m[2])
    if w % 32 or h % 32 or not w or not h:
        near = f"{nearest_multiple(w, 32)}x{nearest_multiple(h, 32)}"
        raise FieldError("size", f"size {w}x{h}: width and height must be multiples of 32; the nearest is {near}")
    return w, h


def _conditioning(v: Any, limits: Limits, form: bool) -> list[dict[str, Any]]:
    if form and isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise FieldError("conditioning", "conditioning must be a JSON list of {part, frame, strength}") from None
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise FieldError("conditioning", "conditioning must be a JSON list of {part, frame, strength}")
    if len(v) > limits.max_conditioning:
        raise FieldError("conditioning", f"{len(v)} conditioning items; this server accepts {limits.max_conditioning}")
    out = []
    for i, item in enumerate(v):
        if unknown := sorted(set(item) - {"part", "frame", "strength"}):
            raise FieldError("conditioning", f"conditioning item {i}: unknown key(s) {', '.join(map(str, unknown))}")
        part = item.get("part")
        if not isinstance(part, str) or not _PART.match(part) or part in FIELDS or part in MEDIA_FIELDS:
            raise FieldError("conditioning", f"conditioning item {i}: part must name an uploaded file part")
        # Types here; the ranges are the request's own checks (the CLI's messages).
        frame = _parse_int("conditioning", item.get("frame", 0), -(2**31), 2**31, form=False)
        strength = _parse_float("conditioning", item.get("strength", 1.0), -math.inf, math.inf, form=False)
        out.append({"part": part, "frame": frame, "strength": strength})
    return out


def _json(name: str, v: Any, form: bool) -> Any:
    """A structured field: JSON text in a form (as ``conditioning``), a JSON value in a JSON body."""
    if form and isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            raise FieldError(name, f"{name} must be JSON, got {v[:80]!r}") from None
    return v


def _loras(v: Any, registry: LoraRegistry | None, form: bool) -> list[dict[str, Any]]:
    """``[{"name", "scale"}]`` (scale defaults to 1) of LoRAs the server offers (``--lora-dir``)."""
    v = _json("loras", v, form)
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise FieldError("loras", 'loras must be a list of {"name": ..., "scale": ...} objects')
    if v and registry is None:
        raise FieldError("loras", "this server offers no LoRAs (it was started without --lora-dir)")
    out = []
    for i, item in enumerate(v):
        if extra := sorted(set(item) - {"name", "scale"}):
            raise FieldError("loras", f"loras[{i}] has an unknown key {extra[0]!r}; give name and scale")
        registry.resolve(item.get("name"), "loras")  # type: ignore[union-attr]
        out.append(
            {
                "name": item["name"],
                "scale": _parse_float(f"loras[{i}].scale", item.get("scale", 1.0), -10.0, 10.0, form=form),
            }
        )
    return out


def frames_for_seconds(seconds: float, fps: float) -> int:
    """The 8n+1 frame count nearest to ``seconds`` at ``fps``."""
    return max(1, math.floor((seconds * fps - 1) / 8 + 0.5) * 8 + 1)


def parse_fields(
    fields: dict[str, Any],
    files: set[str],
    *,
    models: tuple[str, ...],
    limits: Limits,
    default_seed: int,
    form: bool = True,
    loras: LoraRegistry | None = None,
) -> dict[str, Any]:
    """Form fields (and the names of the file parts sent) -> the job spec; :class:`FieldError` names the problem.
    ``form``: the values are form strings ("7", "true"); else JSON values, typed strictly (7, true).
    File parts are named in the spec by their part name; the caller stores them and fills in the file names.
    ``loras``: the LoRAs this server offers by name (``--lora-dir``); None: a request may name none."""

    def _int(name: str, v: Any, lo: int, hi: int) -> int:
        return _parse_int(name, v, lo, hi, form)

    def _float(name: str, v: Any, lo: float, hi: float, *, open_low: bool = False) -> float:
        return _parse_float(name, v, lo, hi, open_low=open_low, form=form)

    if unknown := sorted(set(fields) - set(FIELDS)):
        raise FieldError(unknown[0], f"unknown field {unknown[0]!r}; known fields: {', '.join(FIELDS)}")
    if "prompt" not in fields:
        raise FieldError("prompt", "prompt is required")
    d = GenerationRequest
    spec: dict[str, Any] = {"prompt": _text("prompt", fields["prompt"], limits.max_prompt_chars, required=True)}
    model = fields.get("model", models[0])
    if model not in models:
        raise FieldError("model", f"unknown model {model!r}; this server serves {', '.join(models)}")
    spec["model"] = model
    w, h = _size(fields["size"], limits) if "size" in fields else (d.width, d.height)
    if w * h > limits.max_pixels:  # the default size too
        what = "" if "size" in fields else " (the default)"
        raise FieldError("size", f"size {w}x{h}{what} has {w * h} pixels; this server's limit is {limits.max_pixels}")
    spec |= {"width": w, "height": h}
    fps = _float("fps", fields["fps"], 0.0, 240.0, open_low=True) if "fps" in fields else d.frame_rate
    spec["fps"] = fps
    if "num_frames" in fields and "seconds" in fields:
        raise FieldError("seconds", "give seconds or num_frames, not both")
    if "seconds" in fields:
        seconds = _parse_float("seconds", fields["seconds"], 0.0, 3600.0, open_low=True)  # a string in OpenAI's API
        n = frames_for_seconds(seconds, fps)
    else:
        n = _int("num_frames", fields["num_frames"], 1, 10**6) if "num_frames" in fields else d.num_frames
        if (n - 1) % 8:
            raise FieldError(
                "num_frames", f"num_frames {n} is not 8n+1; the nearest valid value is {nearest_frames(n)}"
            )
    if n > limits.max_frames:
        what = "seconds" if "seconds" in fields else "num_frames"
        raise FieldError(what, f"{n} frames asked for; this server's limit is {limits.max_frames}")
    spec["num_frames"] = n
    spec["seed"] = _int("seed", fields["seed"], 0, MAX_SEED) if "seed" in fields else default_seed
    neg = fields.get("negative_prompt", d.negative_prompt)
    spec["negative_prompt"] = _text("negative_prompt", neg, limits.max_prompt_chars)
    preset = fields.get("preset")
    if preset is not None and preset not in PRESETS:
        raise FieldError("preset", f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    spec["preset"] = preset
    spec["image_cond_noise_scale"] = (
        _float("image_cond_noise_scale", fields["image_cond_noise_scale"], -math.inf, 10.0)
        if "image_cond_noise_scale" in fields
        else d.image_cond_noise_scale
    )
    spec["media_preprocess"] = _bool("media_preprocess", fields.get("media_preprocess", True), form)
    steps: dict[str, Any] = {}
    for name, kind in STEP_FIELDS.items():
        if name in fields:
            v = fields[name]
            steps[name] = _int(name, v, 1, limits.max_steps) if kind is int else _float(name, v, 0.0, 100.0)
    spec["steps"] = steps
    conditioning = _conditioning(fields["conditioning"], limits, form) if "conditioning" in fields else []
    if "input_reference" in files:
        conditioning.insert(0, {"part": "input_reference", "frame": 0, "strength": 1.0})
    named = [c["part"] for c in conditioning]
    if len(set(named)) != len(named):
        raise FieldError("conditioning", "each uploaded part conditions one item; a part is named twice")
    if missing := [p for p in named if p not in files]:
        raise FieldError("conditioning", f"conditioning names part {missing[0]!r}, which was not uploaded")
    if extra := sorted(files - set(named) - {"input_media"}):
        raise FieldError(extra[0], f"the file part {extra[0]!r} is not used (name it in conditioning)")
    spec["conditioning"] = [{"file": c["part"], "frame": c["frame"], "strength": c["strength"]} for c in conditioning]
    spec["input_media"] = "input_media" if "input_media" in files else None
    ds = fields.get("denoise_strength")
    spec["denoise_strength"] = None if ds is None else _float("denoise_strength", ds, -math.inf, math.inf)
    # Long video (the request's own checks range them), LoRAs by name, step caching, the transformer schedule.
    long = {k: fields[k] for k in LONG_FIELDS if k in fields}
    for k in ("temporal_tile_frames", "temporal_overlap_frames"):
        if k in long:
            long[k] = _int(k, long[k], 0, 10**6)
    for k in ("overlap_strength", "adain_factor"):
        if k in long:
            long[k] = _float(k, long[k], -math.inf, math.inf)
    if "window_prompts" in fields:
        wp = _json("window_prompts", fields["window_prompts"], form)
        if not isinstance(wp, list) or not all(isinstance(x, str) for x in wp):
            raise FieldError("window_prompts", "window_prompts must be a list of strings, one per window")
        long["window_prompts"] = [_text("window_prompts", x, limits.max_prompt_chars, required=True) for x in wp]
    spec["long"] = long
    spec["loras"] = _loras(fields["loras"], loras, form) if "loras" in fields else []
    for k in ("cache", "transformer_schedule"):
        v = fields.get(k)
        if v is not None and not isinstance(v, str):
            raise FieldError(k, f"{k} must be a string, got {type(v).__name__}")
        spec[k] = v
    return spec


def recipe_for(spec: dict[str, Any], default: Recipe) -> Recipe:
    """The job's recipe: the server's default or the named preset, with the request's step settings."""
    recipe = default if spec.get("preset") is None else PRESETS[spec["preset"]]
    steps = spec.get("steps") or {}
    guidance = {k: v for k, v in steps.items() if k != "num_inference_steps"}
    first = recipe.first_pass
    if "num_inference_steps" in steps:
        first = replace(first, num_inference_steps=steps["num_inference_steps"], timesteps=None)
        first = replace(first, skip_initial_inference_steps=0, skip_final_inference_steps=0)
    if guidance:
        first = replace(first, **guidance)
    second = recipe.second_pass
    if guidance and second is not None:
        second = replace(second, **guidance)
    return replace(recipe, first_pass=first, second_pass=second)


def to_request(
    spec: dict[str, Any], inputs: Path, default: Recipe, loras: LoraRegistry | None = None
) -> GenerationRequest:
    """The :class:`GenerationRequest` of a job spec; uploaded media are files in ``inputs`` named by the spec, LoRAs
    are names in ``loras`` (a spec naming LoRAs needs it)."""

    def media(name: str) -> str:
        return str(inputs / name)

    return GenerationRequest(
        prompt=spec["prompt"],
        negative_prompt=spec["negative_prompt"],
        height=spec["height"],
        width=spec["width"],
        num_frames=spec["num_frames"],
        frame_rate=spec["fps"],
        seed=spec["seed"],
        conditioning=tuple(
            ConditioningMedia(media(c["file"]), c["frame"], c["strength"]) for c in spec["conditioning"]
        ),
        input_media=None if spec["input_media"] is None else media(spec["input_media"]),
        denoise_strength=spec["denoise_strength"],
        image_cond_noise_scale=spec["image_cond_noise_scale"],
        media_preprocess=spec["media_preprocess"],
        recipe=_with_loras(recipe_for(spec, default), spec.get("loras") or [], loras),
        cache=spec.get("cache"),
        transformer_schedule=spec.get("transformer_schedule"),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in (spec.get("long") or {}).items()},
    )


def _with_loras(recipe: Recipe, chosen: list[dict[str, Any]], registry: LoraRegistry | None) -> Recipe:
    """The job's LoRAs as every pass's set (none named: the recipe's, or the pipeline's own)."""
    if not chosen:
        return recipe
    if registry is None:
        raise FieldError("loras", "this worker offers no LoRAs (start it with --lora-dir, as the service)")
    return recipe.with_loras([Lora(str(registry.resolve(x["name"])), x["scale"]) for x in chosen])


# Request fields -> the wire fields that set them.
_PARAMS = {"height": "size", "width": "size", "frame_rate": "fps", "input": "input_media", "the": "input_media"}


def param_of(error: Exception) -> str | None:
    """The wire field an error is about: its ``param`` (a request field: ``height``, ``conditioning[0].strength``,
    ``recipe.first_pass.num_inference_steps``) translated to the field a client sent (``size``, ``conditioning``,
    ``num_inference_steps``); without one, read from the message (the CLI's messages start with the field)."""
    if isinstance(error, FieldError):  # already a wire field
        return error.param
    param = getattr(error, "param", None) or str(error).split(" ", 1)[0].rstrip(":")
    head = re.split(r"[.\[]", param)[0]
    if head == "recipe":
        last = param.rsplit(".", 1)[-1]
        return last if last in STEP_FIELDS else "preset"
    if head in _PARAMS:
        return _PARAMS[head]
    return head if head in FIELDS or head in MEDIA_FIELDS or head in ("denoise_strength", "conditioning") else None
