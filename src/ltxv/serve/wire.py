"""The wire shapes of the API: OpenAI's ``Video`` objects (and ltxv's ``ltxv`` extension), the error envelope, the
create body as OpenAPI, server-sent events and the Prometheus text (for ``ltxv.serve.api``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ltxv.pipelines.presets import PRESETS
from ltxv.serve.jobspec import MEDIA_FIELDS, STEP_FIELDS, Limits
from ltxv.serve.store import Job

STATUS = {"queued": "queued", "running": "in_progress", "completed": "completed", "failed": "failed"}


# --- the OpenAPI shapes (documentation and schemathesis' response checks) -------------------------------------------


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Video(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["video"]
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    size: str
    seconds: str
    prompt: str
    error: JobError | None = None
    remixed_from_video_id: str | None = None
    ltxv: dict[str, Any]


class VideoList(BaseModel):
    object: Literal["list"]
    data: list[Video]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class Deleted(BaseModel):
    id: str
    object: Literal["video.deleted"]
    deleted: bool


def errors_doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    body = {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
    return {c: {"model": ErrorEnvelope, "description": "error", "content": {"application/json": body}} for c in codes}


def create_schema(models: tuple[str, ...], lim: Limits) -> dict[str, Any]:
    """The create body as OpenAPI: multipart (file parts binary) and JSON, as precise as a schema can say it."""
    sizes = "|".join(str(32 * k) for k in range(1, lim.max_pixels // 32 // 32 + 1))
    num = {"type": "number", "exclusiveMinimum": 0}
    props: dict[str, Any] = {
        "prompt": {"type": "string", "pattern": r"\S", "maxLength": lim.max_prompt_chars},
        "model": {"type": "string", "enum": list(models)},
        "size": {"type": "string", "pattern": f"^({sizes})x({sizes})$", "description": "WIDTHxHEIGHT, multiples of 32"},
        "seconds": {"type": "string", "pattern": r"^[0-9]{1,2}(\.[0-9]{1,3})?$"},
        "num_frames": {"type": "integer", "enum": list(range(1, lim.max_frames + 1, 8)), "description": "8n+1"},
        "fps": {**num, "maximum": 240},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "negative_prompt": {"type": "string", "maxLength": lim.max_prompt_chars},
        "preset": {"type": "string", "enum": list(PRESETS)},
        "image_cond_noise_scale": {"type": "number", "minimum": 0, "maximum": 10},
        "denoise_strength": {**num, "maximum": 1, "description": "video-to-video; needs input_media"},
        "media_preprocess": {"type": "boolean"},
        "conditioning": {"type": "string", "description": 'JSON list of {"part", "frame", "strength"}'},
        **{k: {"type": "integer", "minimum": 1, "maximum": lim.max_steps} for k, t in STEP_FIELDS.items() if t is int},
        **{k: {"type": "number", "minimum": 0, "maximum": 100} for k, t in STEP_FIELDS.items() if t is float},
    }
    files = {k: {"type": "string", "format": "binary"} for k in MEDIA_FIELDS}
    form = {"type": "object", "required": ["prompt"], "properties": {**props, **files}}
    json_props = {**props, "conditioning": {"type": "array", "items": {"type": "object"}}}
    body = {"type": "object", "required": ["prompt"], "properties": json_props, "additionalProperties": False}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form}, "application/json": {"schema": body}},
        }
    }


# --- jobs as OpenAI Video objects -------------------------------------------------------------------------------


def video_object(job: Job) -> dict[str, Any]:
    spec = job.request
    live = {k: job.status.get(k) for k in ("stage", "pass", "passes", "step", "steps")}
    has_preview = job.status.get("preview", False)
    return {
        "id": job.id,
        "object": "video",
        "status": STATUS[job.state],
        "progress": job.progress,
        "created_at": int(job.created_at),
        "completed_at": None if job.completed_at is None else int(job.completed_at),
        "expires_at": None,
        "model": job.model,
        "size": f"{spec['width']}x{spec['height']}",
        "seconds": f"{spec['num_frames'] / spec['fps']:.3g}",
        "prompt": spec["prompt"],
        "error": job.error,
        "remixed_from_video_id": None,
        "ltxv": {
            **live,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "seed": spec["seed"],
            "width": spec["width"],
            "height": spec["height"],
            "num_frames": spec["num_frames"],
            "fps": spec["fps"],
            "preset": spec.get("preset"),
            "cancel_requested": job.cancel_requested,
            "preview": f"/v1/videos/{job.id}/preview" if has_preview else None,
            "timings": job.status.get("timings", {}),
        },
    }


def sse(seq: int | None, type_: str, data: dict[str, Any]) -> str:
    head = "" if seq is None else f"id: {seq}\n"
    return f"{head}event: {type_}\ndata: {json.dumps(data)}\n\n"


def prometheus(s: dict[str, float]) -> str:
    lines = [
        ("ltxv_queue_depth", "gauge", "jobs waiting for a worker", s["queued"]),
        ("ltxv_jobs_running", "gauge", "jobs being generated", s["running"]),
        ("ltxv_workers", "gauge", "live workers", s["workers"]),
        ("ltxv_jobs_completed_total", "counter", "jobs completed", s["completed"]),
        ("ltxv_jobs_failed_total", "counter", "jobs failed (cancelled included)", s["failed"]),
        ("ltxv_denoise_steps_total", "counter", "denoising steps of completed jobs", s["steps"]),
        ("ltxv_denoise_step_seconds_total", "counter", "seconds spent in those steps", s["step_seconds"]),
    ]
    out = []
    for name, kind, help_, value in lines:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
    return "\n".join(out) + "\n"
