"""The HTTP API: OpenAI's Videos surface (``/v1/videos``), superset, over a job store. A thin translation: form fields
become a job spec and a :class:`GenerationRequest` (:mod:`ltxv.serve.jobspec`), the request is checked as the CLI
checks it (:mod:`ltxv.serve.admission`), the job goes into the store; jobs come back as OpenAI ``Video`` objects.
No generation happens here.

Wire rules (the ``openai`` SDK's behaviour decides them, ``serving.md`` §1.1): create takes multipart (the SDK always
sends it) and JSON; a failed job is an HTTP 200 with ``status: "failed"`` (the SDK retries a 5xx, then raises); no
409 for anything (the SDK retries it); ``Idempotency-Key`` on create returns the first job; every error is a 4xx with
``{"error": {"message", "type", "param", "code"}}``; ``openai-poll-after-ms`` paces ``poll()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ltxv.errors import LtxvError
from ltxv.pipelines.loras import LoraRegistry
from ltxv.pipelines.presets import PRESETS
from ltxv.pipelines.request import GenerationRequest, Recipe
from ltxv.serve.admission import Check, check_request
from ltxv.serve.files import JOB_ID, PREVIEW, StoreDir, new_job_id, sweep
from ltxv.serve.jobspec import FIELDS, MEDIA_FIELDS, Limits, param_of, parse_fields, to_request
from ltxv.serve.security import BodyTooLarge, Guard, token_ok
from ltxv.serve.store import IdempotencyConflict, Job, QueueFull, SqliteJobStore
from ltxv.serve.uploads import UnsupportedMedia, store_upload
from ltxv.serve.wire import STATUS, Deleted, Video, VideoList, create_schema, errors_doc, prometheus, sse, video_object
from ltxv.serve.worker import failpoint

log = logging.getLogger(__name__)
WEB = Path(__file__).parent / "web"
TERMINAL_EVENTS = ("completed", "failed")
_BEARER = HTTPBearer(auto_error=False, description="the server's token (ltxv serve --token, or LTXV_TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


@dataclass
class ServiceConfig:
    models: tuple[str, ...]  # the model ids this service accepts (the first is the default)
    default_recipe: Recipe
    default_preset: str | None = None  # the default recipe's preset name, if it is one
    default_seed: int = GenerationRequest.seed
    limits: Limits = field(default_factory=Limits)
    token: str | None = None
    loopback: bool = True  # bound to a loopback address: Host must be a loopback name
    max_queue: int = 1000
    max_attempts: int = 3
    check: Check = check_request
    sweep_s: float = 60.0  # how often the sweeper runs (0: never, in the background)
    sweep_grace_s: float = 3600.0
    poll_ms: tuple[int, int] = (1000, 500)  # openai-poll-after-ms while queued, while running
    suggested: dict[str, Any] = field(default_factory=dict)  # the page's starting size/frames for the model
    loras: LoraRegistry | None = None  # the LoRAs a request may name (``--lora-dir``)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}


_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error", 503: "server_error"}


def _envelope(e: ApiError) -> JSONResponse:
    body = {"message": e.message, "type": _TYPES.get(e.status, "invalid_request_error"), "param": e.param}
    return JSONResponse({"error": {**body, "code": e.code}}, status_code=e.status, headers=e.headers)


def only_query(*names: str) -> Any:
    """A dependency refusing query parameters the operation does not take (a typo is an error, not a default)."""

    def check(request: Request) -> None:
        if extra := [k for k in request.query_params if k not in names]:
            message = f"unknown query parameter {extra[0]!r}" + (
                f"; this operation takes {', '.join(names)}" if names else ""
            )
            raise ApiError(400, message, param=extra[0], code="unknown_parameter")

    return Depends(check)


def fingerprint(spec: dict[str, Any], digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps([spec, digests], sort_keys=True).encode()).hexdigest()


def create_app(store: SqliteJobStore, layout: StoreDir, config: ServiceConfig) -> FastAPI:
    """The API over ``store``; jobs' files in ``layout``. Wrapped in the security middleware."""
    stop = threading.Event()

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        thread = None
        if config.sweep_s > 0:
            thread = threading.Thread(target=_sweeper, args=(store, layout, config, stop), daemon=True, name="sweeper")
            thread.start()
        yield
        stop.set()

    app = FastAPI(
        title="ltxv",
        version="1",
        description="LTX-Video jobs over OpenAI's Videos API (superset).",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    def auth(credentials: Credentials) -> None:
        given = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        if not token_ok(config.token, given):
            raise ApiError(
                401, "a valid bearer token is required", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )

    guarded = [Depends(auth)] if config.token is not None else []
    auth_errors = (401,) if config.token is not None else ()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _envelope(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        param = str(first.get("loc", ["", "?"])[-1])
        return _envelope(
            ApiError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param, code="invalid_value")
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: "no such endpoint", 405: "method not allowed"}.get(e.status_code, str(e.detail))
        code = "not_found" if e.status_code == 404 else None
        headers = dict(e.headers or {})
        if e.status_code == 405:  # every method of the path (Starlette names only the first route's)
            methods = {m for r in app.routes if r.matches(request.scope)[0] == Match.PARTIAL for m in r.methods or ()}
            headers["Allow"] = ", ".join(sorted(methods))
        return _envelope(ApiError(e.status_code, message, code=code, headers=headers))

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(request: Request, e: sqlite3.OperationalError) -> JSONResponse:
        log.error("job store error: %s", e)
        return _envelope(ApiError(503, "the job store is busy; try again", code="busy", headers={"Retry-After": "1"}))

    def get_job(video_id: str) -> Job:
        job = store.get(video_id) if JOB_ID.match(video_id) else None
        if job is None:
            raise ApiError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
        return job

    # --- create ----------------------------------------------------------------------------------------------

    @app.post(
        "/v1/videos",
        response_model=Video,
        responses=errors_doc(400, *auth_errors, 403, 413, 415, 429),
        dependencies=[*guarded, only_query()],
        openapi_extra=create_schema(config.models, config.limits),
        summary="Create a video job",
    )
    async def create(request: Request) -> JSONResponse:
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
            raise ApiError(400, "Idempotency-Key must be 1-255 printable characters", param="Idempotency-Key")
        job_id = new_job_id()
        folder = layout.job_inputs(job_id)
        try:
            fields, uploads, form = await _read_body(request, config.limits)
            job, created = await run_in_threadpool(_submit, fields, uploads, form, job_id, key)
        except BodyTooLarge as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise ApiError(413, str(e), code="body_too_large") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if not created:
            shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse(video_object(job), headers={"openai-poll-after-ms": str(config.poll_ms[0])})

    def _submit(
        fields: dict[str, Any], uploads: dict[str, UploadFile], form: bool, job_id: str, key: str | None
    ) -> tuple[Job, bool]:
        try:
            spec = parse_fields(
                fields,
                set(uploads),
                models=config.models,
                limits=config.limits,
                default_seed=config.default_seed,
                form=form,
                loras=config.loras,
            )
            folder = layout.job_inputs(job_id)
            names, digests = {}, {}
            for part, upload in uploads.items():
                names[part], _ = store_upload(part, upload.file, folder, config.limits)
                digests[part] = _digest(folder / names[part])
            for c in spec["conditioning"]:
                c["file"] = names[c["file"]]
            if spec["input_media"] is not None:
                spec["input_media"] = names["input_media"]
            request = to_request(spec, folder, config.default_recipe, config.loras)
            config.check(request)
        except UnsupportedMedia as e:
            raise ApiError(415, str(e), param=e.param, code="unsupported_media_type") from None
        except LtxvError as e:  # the request's own checks, the preflight's (media, recipe vs model, memory)
            raise ApiError(400, str(e), param=param_of(e), code=getattr(e, "code", None) or "invalid_value") from None
        try:
            job, created = store.submit(
                job_id,
                spec.pop("model"),
                spec,
                idempotency_key=key,
                fingerprint=fingerprint(spec, digests),
                max_attempts=config.max_attempts,
                max_queue=config.max_queue,
            )
        except QueueFull as e:
            raise ApiError(429, str(e), code="queue_full", headers={"Retry-After": "10"}) from None
        except IdempotencyConflict:
            message = "this Idempotency-Key was used for a different request"
            raise ApiError(400, message, param="Idempotency-Key", code="idempotency_conflict") from None
        failpoint("api.after_submit")
        return job, created

    # --- read, list, cancel, delete ----------------------------------------------------------------------------

    @app.get(
        "/v1/videos/{video_id}",
        response_model=Video,
        responses=errors_doc(400, *auth_errors, 404),
        dependencies=[*guarded, only_query()],
    )
    def retrieve(video_id: str) -> JSONResponse:
        job = get_job(video_id)
        poll = config.poll_ms[0] if job.state == "queued" else config.poll_ms[1]
        return JSONResponse(video_object(job), headers={"openai-poll-after-ms": str(poll)})

    @app.get(
        "/v1/videos",
        response_model=VideoList,
        responses=errors_doc(400, *auth_errors),
        dependencies=[*guarded, only_query("after", "limit", "order")],
    )
    def list_videos(
        after: str = Query(None, pattern=JOB_ID.pattern, description="the last id of the previous page"),
        limit: int = Query(20, ge=1, le=100),
        order: Literal["asc", "desc"] = Query("desc"),
    ) -> dict[str, Any]:
        try:
            jobs, more = store.list(after=after, limit=limit, order=order)
        except KeyError:
            raise ApiError(400, f"after: no video with id {after!r}", param="after", code="invalid_value") from None
        data = [video_object(j) for j in jobs]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}

    @app.post(
        "/v1/videos/{video_id}/cancel",
        response_model=Video,
        responses=errors_doc(400, *auth_errors, 403, 404),
        dependencies=[*guarded, only_query()],
    )
    def cancel(video_id: str) -> dict[str, Any]:
        get_job(video_id)
        job = store.cancel(video_id)
        if job is None:
            raise ApiError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
        return video_object(job)

    @app.delete(
        "/v1/videos/{video_id}",
        response_model=Deleted,
        responses=errors_doc(400, *auth_errors, 403, 404),
        dependencies=[*guarded, only_query()],
    )
    def delete(video_id: str) -> dict[str, Any]:
        job = get_job(video_id)
        if not store.delete(video_id):
            raise ApiError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
        if job.state != "running":  # a running job's files go once its worker has stopped (the sweeper)
            layout.remove_job(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    # --- content, preview, events ---------------------------------------------------------------------------

    @app.get(
        "/v1/videos/{video_id}/content",
        responses={
            200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "the video, or its thumbnail"},
            **errors_doc(400, *auth_errors, 404),
        },
        response_class=FileResponse,
        dependencies=[*guarded, only_query("variant")],
    )
    def content(video_id: str, variant: Literal["video", "thumbnail"] = Query("video")) -> FileResponse:
        job = get_job(video_id)
        if job.state != "completed" or not job.output:
            message = f"video {video_id} is {STATUS[job.state]}; its content exists once it is completed"
            raise ApiError(404, message, param="video_id", code="not_ready")
        name = job.output[variant]
        media = "video/mp4" if variant == "video" else "image/jpeg"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        return FileResponse(
            layout.output_file(video_id, name),
            media_type=media,
            filename=f"{video_id}{Path(name).suffix}",
            content_disposition_type="attachment",
            headers=headers,
        )

    @app.get(
        "/v1/videos/{video_id}/preview",
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "the latest preview"},
            **errors_doc(*auth_errors, 404),
        },
        response_class=FileResponse,
        dependencies=guarded,
    )
    def preview(video_id: str) -> FileResponse:
        get_job(video_id)
        path = layout.job_outputs(video_id) / PREVIEW
        if not path.is_file():
            raise ApiError(404, f"video {video_id} has no preview yet", param="video_id", code="not_ready")
        return FileResponse(
            path, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        )

    @app.get(
        "/v1/videos/{video_id}/events",
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "server-sent events, replayable by Last-Event-ID",
            },
            **errors_doc(400, *auth_errors, 404),
        },
        response_class=StreamingResponse,
        dependencies=[*guarded, only_query()],
    )
    def events(video_id: str, request: Request) -> StreamingResponse:
        get_job(video_id)
        raw = request.headers.get("last-event-id", "0").strip() or "0"
        if not raw.isdigit() or len(raw) > 12:
            raise ApiError(400, "Last-Event-ID must be an event id (a number)", param="Last-Event-ID")
        return StreamingResponse(
            _event_stream(store, video_id, int(raw)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- service -------------------------------------------------------------------------------------------

    @app.get("/v1/models", responses=errors_doc(400, *auth_errors), dependencies=[*guarded, only_query()])
    def models() -> dict[str, Any]:
        info = {
            "presets": list(PRESETS),
            "default_preset": config.default_preset,
            "limits": vars(config.limits),
            "suggested": config.suggested,
        }
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "ltxv", "ltxv": info} for m in config.models]
        return {"object": "list", "data": data}

    @app.get("/healthz", responses=errors_doc(400), dependencies=[only_query()])
    def healthz() -> dict[str, Any]:
        s = store.stats()
        return {"status": "ok", "workers": int(s["workers"]), "queued": int(s["queued"]), "running": int(s["running"])}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses=errors_doc(400, *auth_errors),
        dependencies=[*guarded, only_query()],
    )
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(prometheus(store.stats()), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((WEB / "index.html").read_text(), headers={"X-Content-Type-Options": "nosniff"})

    app.mount("/web", StaticFiles(directory=WEB), name="web")
    app.add_middleware(Guard, loopback_only_hosts=config.loopback, max_body=config.limits.max_upload_bytes)
    return app


async def _read_body(request: Request, limits: Limits) -> tuple[dict[str, Any], dict[str, UploadFile], bool]:
    """(fields, file parts, is_form) of a create request: multipart or urlencoded form, or a JSON object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=len(MEDIA_FIELDS) + limits.max_conditioning, max_fields=2 * len(FIELDS))
        except BodyTooLarge:
            raise
        except Exception as e:  # malformed multipart, too many parts, a field over 1 MiB
            raise ApiError(
                400, f"the form cannot be read: {getattr(e, 'detail', None) or e}", code="invalid_body"
            ) from None
        fields: dict[str, Any] = {}
        files: dict[str, UploadFile] = {}
        for name, value in form.multi_items():
            if isinstance(value, str) and (nested := _NESTED.fullmatch(name)):
                _unflatten(fields, nested.group(1), nested.group(2), value)
                continue
            if name in fields or name in files:
                raise ApiError(400, f"the field {name!r} is given twice", param=name, code="invalid_value")
            if isinstance(value, UploadFile):
                if value.filename == "" and value.size == 0:  # a browser form's empty file input
                    continue
                if name in FIELDS:
                    raise ApiError(400, f"{name} must be a text field, not a file", param=name, code="invalid_value")
                files[name] = value
            elif name in MEDIA_FIELDS:
                raise ApiError(
                    400, f"{name} must be an uploaded file (URLs are not fetched)", param=name, code="invalid_value"
                )
            else:
                fields[name] = value
        return fields, files, True
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_body")
        if media := [k for k in MEDIA_FIELDS if k in body]:
            message = f"{media[0]} must be uploaded as a multipart file (URLs are not fetched)"
            raise ApiError(400, message, param=media[0], code="invalid_value")
        return body, {}, False
    raise ApiError(415, "send multipart/form-data or application/json", code="unsupported_media_type")


# How the openai SDK sends a list in a multipart form: "window_prompts[]" once per string, "loras[][name]" and
# "loras[][scale]" once per object.
_NESTED = re.compile(r"([A-Za-z_]{1,32})\[\](?:\[([A-Za-z_]{1,32})\])?")


def _unflatten(fields: dict[str, Any], name: str, key: str | None, value: str) -> None:
    """Rebuild a list field from its flattened form parts; a key seen again starts the list's next object."""
    items = fields.setdefault(name, [])
    if not isinstance(items, list):
        raise ApiError(400, f"the field {name!r} is given twice", param=name, code="invalid_value")
    if key is None:
        items.append(value)
    elif items and isinstance(items[-1], dict) and key not in items[-1]:
        items[-1][key] = value
    else:
        items.append({key: value})


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def _event_stream(store: SqliteJobStore, job_id: str, after: int, poll_s: float = 0.25, ping_s: float = 15.0):  # type: ignore[no-untyped-def]
    """The job's events after ``after`` (replayed from the store), then new ones as they come, until the job ends."""
    yield "retry: 1000\n\n"
    quiet = 0.0
    while True:
        events = await run_in_threadpool(store.events, job_id, after)
        for e in events:
            after = e.seq
            data = {"video_id": job_id, **e.data}
            if e.type in TERMINAL_EVENTS:
                job = await run_in_threadpool(store.get, job_id)
                if job is not None:
                    data["video"] = video_object(job)
            yield sse(e.seq, e.type, data)
            if e.type in TERMINAL_EVENTS:
                return
        if not events:
            job = await run_in_threadpool(store.get, job_id)
            if job is None:
                yield sse(None, "deleted", {"video_id": job_id})
                return
            quiet += poll_s
            if quiet >= ping_s:
                quiet = 0.0
                yield ": ping\n\n"
        else:
            quiet = 0.0
        await asyncio.sleep(poll_s)


def _sweeper(store: SqliteJobStore, layout: StoreDir, config: ServiceConfig, stop: threading.Event) -> None:
    while True:
        try:
            sweep(store, layout, grace_s=config.sweep_grace_s)
        except Exception:
            log.exception("sweep failed")
        if stop.wait(config.sweep_s):
            return
