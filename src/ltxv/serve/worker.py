"""The one worker loop: claim a job, run it on a warm engine, write the result atomically, commit it fenced.

The loop knows nothing about processes or devices: it takes a store (:class:`ltxv.serve.store.JobStore`), an
:class:`Engine` and a ``stop`` event, so the same code runs in ``ltxv worker``, in a thread of a test, or in a Ray
actor. During a job:

* every denoising step: stop if a cancel was requested (the job then fails with ``cancelled``) or if the claim was
  lost (another worker holds the job now: this one commits nothing), or if ``stop`` is set (the job is released,
  queued again at once);
* at most every ``progress_s`` (and at the last step of each pass): progress, stage and step into the job, and a
  ``progress`` event;
* at most every ``preview_s``: a JPEG preview of the denoised estimate (``preview.jpg``) and a ``preview`` event;
* a keeper thread renews the lease every ``lease_s / 4`` while the job shows signs of life, so stages without steps
  (encoding media, decoding a long video) do not lose it; a job silent for ``stall_s`` stops being renewed.

Then the video is written as ``outputs/<id>/a<attempt>.mp4`` (temporary file, fsync, rename) with a thumbnail, and
the job is committed; a commit that finds the claim lost or cancelled leaves files that the sweeper removes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ltxv.errors import LtxvError
from ltxv.pipelines.request import GenerationRequest, Recipe
from ltxv.serve.admission import check_request
from ltxv.serve.files import PREVIEW, StoreDir, new_job_id, publish
from ltxv.serve.jobspec import param_of, to_request
from ltxv.serve.store import Claim, SqliteJobStore

log = logging.getLogger(__name__)

FAILPOINT_ENV = "LTXV_SERVE_FAILPOINT"


def failpoint(name: str) -> None:
    """Fault injection for the kill tests: SIGKILL this process here when ``$LTXV_SERVE_FAILPOINT`` names ``name``
    (a real signal at an exact point, e.g. between writing an output and committing it)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Step:
    """What the engine reports after each unit of work: a denoising step, or (``stage``) the upsample or a block of
    decoded frames (``step`` of ``steps`` then counts those)."""

    pass_index: int  # 0-based
    passes: int
    step: int  # 0-based, within the pass (or the stage)
    steps: int
    t: float
    latents: Callable[[], Any] = lambda: None  # the denoised estimate, computed only when a preview asks
    stage: str = "denoise"


class Engine(Protocol):
    """A loaded model that runs requests: :class:`ltxv.serve.engine.PipelineEngine`, or a fake in tests."""

    models: tuple[str, ...]  # the model ids it serves
    default_recipe: Recipe

    def plan(self, request: GenerationRequest) -> list[tuple[int, float]]:
        """(steps, relative cost of one step) of each pass, for the progress estimate."""
        ...

    def generate(self, request: GenerationRequest, on_step: Callable[[Step], None]) -> Any:
        """The video, (F, H, W, 3): float in [0, 1] (a tensor) or uint8."""
        ...

    def preview(self, latents: Any) -> np.ndarray | None:
        """A denoised estimate -> RGB uint8 (F', H', W', 3) on the latent grid, or None."""
        ...


class Cancelled(Exception):
    pass


class LeaseLost(Exception):
    pass


class Stopping(Exception):
    pass


@dataclass
class WorkerConfig:
    lease_s: float = 30.0
    poll_s: float = 0.5
    progress_s: float = 0.5
    preview_s: float = 1.0
    stall_s: float = 600.0
    preview_height: int = 128  # pixels per preview tile
    preview_tiles: int = 8  # latent frames shown in the preview strip, evenly spaced


@dataclass
class Progress:
    """``floor(100 * done / total)`` over the denoising steps (each weighted by its pass's cost) plus a tail
    (upsampling, decoding, writing) that takes ``tail`` of the time, as measured on the previous job."""

    plan: list[tuple[int, float]]
    tail: float = 0.2
    done: float = 0.0
    offsets: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = 0.0
        for n, cost in self.plan:
            self.offsets.append(total)
            total += n * cost
        self.denoise = total or 1.0
        self.total = self.denoise / (1.0 - self.tail)

    def step(self, s: Step) -> int:
        if s.stage == "decode":  # the decode's blocks fill most of the tail (the rest: writing the file)
            self.done = max(self.done, self.denoise + 0.9 * (self.total - self.denoise) * (s.step + 1) / s.steps)
        elif s.stage == "denoise" and s.pass_index < len(self.plan):
            self.done = max(self.done, self.offsets[s.pass_index] + (s.step + 1) * self.plan[s.pass_index][1])
        return self.percent()

    def percent(self) -> int:
        return min(99, math.floor(100 * self.done / self.total))


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 500 else text[:497] + "..."


class Worker:
    def __init__(
        self,
        store: SqliteJobStore,
        engine: Engine,
        layout: StoreDir,
        config: WorkerConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.store, self.engine, self.layout = store, engine, layout
        self.config = config or WorkerConfig()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{new_job_id()[6:14]}"
        self.tail = 0.2  # learned share of a job's time after the last step

    def run(self, stop: threading.Event, *, max_jobs: int | None = None) -> int:
        """Claim and run jobs until ``stop`` is set (or ``max_jobs`` ran); returns how many ran."""
        ran, seen = 0, -math.inf
        cfg = self.config
        models = self.engine.models
        ttl = 4 * cfg.poll_s + cfg.lease_s
        try:
            while not stop.is_set() and (max_jobs is None or ran < max_jobs):
                if time.monotonic() - seen > ttl / 3:
                    self.store.worker_alive(self.owner, models, ttl, pid=os.getpid(), host=socket.gethostname())
                    seen = time.monotonic()
                claim = self.store.claim(self.owner, cfg.lease_s, models)
                if claim is None:
                    stop.wait(cfg.poll_s)
                    continue
                self.run_claim(claim, stop)
                ran += 1
        finally:
            self.store.worker_gone(self.owner)
        return ran

    def run_claim(self, claim: Claim, stop: threading.Event) -> str:
        """Run one claimed job to its outcome: completed, failed, cancelled, retrying, released or lost."""
        job = claim.job
        log.info("job %s attempt %d: started", job.id, claim.attempt)
        try:
            loras = getattr(self.engine, "loras", None)  # the LoRAs this worker offers by name (--lora-dir)
            request = to_request(job.request, self.layout.job_inputs(job.id), self.engine.default_recipe, loras)
            check_request(request)
        except LtxvError as e:
            return self.store.fail(claim, _error("invalid_request", str(e), param_of(e)))
        keeper = _Keeper(self.store, claim, self.config)
        keeper.start()
        try:
            return self._generate(claim, request, stop, keeper)
        finally:
            keeper.stop()

    def _generate(self, claim: Claim, request: GenerationRequest, stop: threading.Event, keeper: _Keeper) -> str:
        cfg, store, job = self.config, self.store, claim.job
        progress = Progress(self.engine.plan(request), tail=self.tail)
        started = time.perf_counter()
        last = {"progress": -math.inf, "preview": -math.inf, "step": started}
        timings: dict[str, float] = {"steps": 0, "step_seconds": 0.0}
        status: dict[str, Any] = {"stage": "starting", "attempt": claim.attempt, "timings": timings}

        def on_step(s: Step) -> None:
            now = time.perf_counter()
            keeper.alive()
            if stop.is_set():
                raise Stopping
            pct = progress.step(s)
            end_of_pass = s.step + 1 == s.steps
            if s.stage != "denoise":
                status["stage"] = s.stage
                if now - last["progress"] >= cfg.progress_s or end_of_pass:
                    last["progress"] = now
                    event = {"progress": pct, "stage": s.stage, "done": s.step + 1, "total": s.steps}
                    state = store.heartbeat(claim, cfg.lease_s, progress=pct, status=status, event=("progress", event))
                else:
                    state = store.check(claim)
                if state != "ok":
                    raise Cancelled if state == "cancel" else LeaseLost
                return
            timings["steps"] += 1
            timings["step_seconds"] += now - last["step"]
            last["step"] = now
            status.update(
                stage="denoise", **{"pass": s.pass_index + 1}, passes=s.passes, step=s.step + 1, steps=s.steps
            )
            if now - last["preview"] >= cfg.preview_s or end_of_pass:
                last["preview"] = now
                status["preview"] = self._preview(claim, s) or status.get("preview", False)
            if now - last["progress"] >= cfg.progress_s or end_of_pass:
                last["progress"] = now
                event = {"progress": pct, **{k: status[k] for k in ("stage", "pass", "passes", "step", "steps")}}
                state = store.heartbeat(claim, cfg.lease_s, progress=pct, status=status, event=("progress", event))
            else:
                state = store.check(claim)
            if state == "cancel":
                raise Cancelled
            if state == "lost":
                raise LeaseLost

        try:
            video = self.engine.generate(request, on_step)
            status["stage"] = "write"
            output = self._write_output(job.id, claim.attempt, video, request.frame_rate)
            failpoint("worker.after_output")
        except Cancelled:
            return store.fail(claim, _error("cancelled", "the job was cancelled"))
        except LeaseLost:
            log.warning("job %s attempt %d: the claim was lost (another worker holds the job)", job.id, claim.attempt)
            return "lost"
        except Stopping:
            store.release(claim)
            return "released"
        except _OutputError as e:
            return store.fail(claim, _error("output_write_failed", f"the output could not be written: {e}"))
        except LtxvError as e:  # the request's own media, the model files, the device
            return store.fail(claim, _error("invalid_request", str(e), param_of(e)))
        except Exception as e:
            log.exception("job %s attempt %d failed", job.id, claim.attempt)
            code = "out_of_memory" if type(e).__name__ == "OutOfMemoryError" else "generation_failed"
            return store.fail(claim, _error(code, _one_line(e)))
        end = time.perf_counter()
        total = timings["total_seconds"] = end - started
        if timings["steps"]:  # the share of the time after the last step, for the next job's progress
            self.tail = min(0.9, max(0.02, (end - last["step"]) / total))
        outcome = store.complete(claim, output, status={**status, "stage": "done", "timings": timings})
        log.info("job %s attempt %d: %s in %.2f s", job.id, claim.attempt, outcome, total)
        return outcome

    def _write_output(self, job_id: str, attempt: int, video: Any, fps: float) -> dict[str, str]:
        from ltxv.io.video import to_uint8, write_mp4

        frames = video if isinstance(video, np.ndarray) else to_uint8(video)
        folder = self.layout.job_outputs(job_id)
        names = {"video": f"a{attempt}.mp4", "thumbnail": f"a{attempt}.jpg"}
        try:
            publish(folder / names["video"], lambda tmp: write_mp4(tmp, frames, fps))
            publish(folder / names["thumbnail"], lambda tmp: _jpeg(tmp, frames[len(frames) // 2]))
        except OSError as e:
            raise _OutputError(_one_line(e)) from e
        return names

    def _preview(self, claim: Claim, s: Step) -> bool:
        try:
            rgb = self.engine.preview(s.latents())
        except Exception:  # a preview must never fail a job
            log.exception("preview failed")
            return False
        if rgb is None:
            return False
        cfg = self.config
        idx = np.unique(np.linspace(0, len(rgb) - 1, min(cfg.preview_tiles, len(rgb))).round().astype(int))
        strip, tile = preview_strip(rgb[idx], cfg.preview_height)
        try:
            publish(self.layout.job_outputs(claim.job.id) / PREVIEW, lambda tmp: _jpeg(tmp, strip, quality=85))
        except OSError:
            return False
        data = {"url": f"/v1/videos/{claim.job.id}/preview", "frames": len(idx), "tile": tile, "step": s.step + 1}
        self.store.heartbeat(claim, cfg.lease_s, event=("preview", data))
        return True


class _OutputError(Exception):
    pass


def preview_strip(rgb: np.ndarray, height: int) -> tuple[np.ndarray, list[int]]:
    """(K, h, w, 3) uint8 tiles -> one (height, K * width, 3) strip, each tile scaled bilinearly to ``height``
    rows (the page animates through the tiles); also the tile's [width, height]."""
    from PIL import Image

    _, h, w, _ = rgb.shape
    width = max(1, round(w * height / h))
    tiles = [np.asarray(Image.fromarray(t).resize((width, height), Image.BILINEAR)) for t in rgb]
    return np.concatenate(tiles, axis=1), [width, height]


def _jpeg(path: Any, rgb: np.ndarray, quality: int = 90) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="JPEG", quality=quality)


class _Keeper:
    """Renews a claim's lease from a thread while the job shows signs of life (see the module docstring)."""

    def __init__(self, store: SqliteJobStore, claim: Claim, config: WorkerConfig) -> None:
        self.store, self.claim, self.config = store, claim, config
        self._stop = threading.Event()
        self._seen = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def alive(self) -> None:
        self._seen = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cfg = self.config
        while not self._stop.wait(cfg.lease_s / 4):
            if time.monotonic() - self._seen > cfg.stall_s:
                log.warning(
                    "job %s: no sign of life for %.0f s; the lease is left to expire", self.claim.job.id, cfg.stall_s
                )
                return
            try:
                if self.store.heartbeat(self.claim, cfg.lease_s) == "lost":
                    return
            except Exception:  # e.g. the database busy past its timeout: the next renewal tries again
                log.exception("lease renewal failed")
