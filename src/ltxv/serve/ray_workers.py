"""Workers as Ray actors: the one worker loop (:class:`ltxv.serve.worker.Worker`) on any node of a cluster.

* Each :class:`WorkerActor` loads its engine on its own node (model names resolve in that node's hub cache, paths
  must exist there; the offline model is written there), then runs the worker loop against the store actor
  (:mod:`ltxv.serve.ray_store`). A worker that cannot load its models reports it in one line and stops; no job was
  claimed, so none fails.
* Actors restart when their process or node dies (``max_restarts=-1``) and Ray never re-runs a call
  (``max_task_retries=0``): a job is retried by its lease alone, so no job runs twice by two mechanisms. The job
  of a dead worker is claimed again once its lease expires (the lease is the store actor's clock).
* Outputs: unless every node mounts the store folder (``shared_outputs``), a worker fetches a job's inputs from the
  store actor and sends each output file's bytes back to it, published on the head node before the commit.

:class:`RayWorkers` is the driver side: it starts the actors (one per GPU, or N CPU actors), keeps each one's loop
running (a restarted actor gets a new ``run`` call), and stops them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltxv.pipelines.request import Recipe, RequestError
from ltxv.serve.files import PREVIEW, StoreDir
from ltxv.serve.ray_store import RayJobStore, store_client
from ltxv.serve.worker import Worker, WorkerConfig
from ltxv.weights.errors import LoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorSpec:
    """What every worker actor loads and how it runs (picklable: it travels to the actors)."""

    load: dict[str, Any]  # load_pipeline's arguments; paths as they are on the worker's node
    names: tuple[str, ...]  # the model ids served
    recipe: Recipe
    config: WorkerConfig
    offline: bool = False  # serve the offline model, written on each node
    shared_root: str | None = None  # the store folder, when every node mounts it at this path
    threads: int | None = None  # torch threads (CPU actors)


class RayWorker(Worker):
    """The worker loop with the job files on the head node (unless the store folder is shared): a job's inputs are
    fetched into a node-local scratch store folder before it runs, and every file the loop publishes there (the
    video, its thumbnail, previews) is sent to the store actor, published on the head node, and removed here, before
    the commit or event that names it."""

    def __init__(self, store: RayJobStore, engine: Any, layout: StoreDir, config: WorkerConfig, *, remote: bool):
        owner = f"ray:{socket.gethostname()}:{os.getpid()}"
        super().__init__(_Uploading(store, layout) if remote else store, engine, layout, config, owner=owner)  # type: ignore[arg-type]
        self.remote_files = remote
        self.head = store

    def run_claim(self, claim: Any, stop: threading.Event) -> str:
        if not self.remote_files:
            return super().run_claim(claim, stop)
        job_id = claim.job.id
        try:
            for name, data in self.head.read_inputs(job_id).items():
                folder = self.layout.job_inputs(job_id)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            return super().run_claim(claim, stop)
        finally:
            self.layout.remove_job(job_id)  # the node-local copies

    def _write_output(self, job_id: str, attempt: int, video: Any, fps: float) -> dict[str, str]:
        names = super()._write_output(job_id, attempt, video, fps)
        if self.remote_files:
            for name in names.values():
                _upload(self.head, self.layout, job_id, name)
        return names


class _Uploading:
    """The store as the worker loop sees it on a node without the store folder: a preview event is sent only after
    the preview file it announces has reached the head node."""

    def __init__(self, store: RayJobStore, layout: StoreDir) -> None:
        self._store, self._layout = store, layout

    def heartbeat(self, claim: Any, lease_s: float, **kw: Any) -> Any:
        event = kw.get("event")
        if event is not None and event[0] == "preview":
            try:
                _upload(self._store, self._layout, claim.job.id, PREVIEW)
            except Exception:  # a preview must never fail a job: the lease is renewed, the event dropped
                log.exception("preview upload failed")
                kw = {**kw, "event": None}
        return self._store.heartbeat(claim, lease_s, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _upload(store: RayJobStore, layout: StoreDir, job_id: str, name: str) -> None:
    local = layout.output_file(job_id, name)
    try:
        store.write_output(job_id, name, local.read_bytes())
    finally:
        local.unlink(missing_ok=True)


class WorkerActor:
    """One worker (run as a Ray actor by :class:`RayWorkers`)."""

    def __init__(self, spec: ActorSpec) -> None:
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.worker: RayWorker | None = None
        scratch = Path(tempfile.mkdtemp(prefix="ltxv-ray-worker-"))
        try:
            self.worker = _make_worker(store_client(), spec, scratch)
        except (LoadError, RequestError, OSError) as e:  # this node lacks a model file, or cannot read it
            self.error = f"{socket.gethostname()}: {' '.join(str(e).split())}"
            log.error("worker could not start: %s", self.error)

    def run(self, max_jobs: int | None = None) -> dict[str, Any]:
        """The worker loop until :meth:`stop` (or ``max_jobs``); {"ran": n} or {"error": why it could not start}."""
        if self.worker is None:
            return {"error": self.error}
        self.stop_event.clear()
        return {"ran": self.worker.run(self.stop_event, max_jobs=max_jobs)}

    def stop(self) -> None:
        self.stop_event.set()

    def where(self) -> dict[str, Any]:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "host": socket.gethostname()}


def _make_worker(store: RayJobStore, spec: ActorSpec, scratch: Path) -> RayWorker:
    from ltxv.serve.engine import load_engine

    load = dict(spec.load)
    if spec.offline:  # the same seeded weights on every node: identical to the single-machine worker's
        from ltxv.serve.cli import offline_model

        load["checkpoint"], load["upsampler"], load["text_encoder"] = offline_model(_node_cache() / "offline-model")
    engine = load_engine(load, names=spec.names, default_recipe=spec.recipe, preview_cache=scratch / "preview-maps")
    layout = StoreDir(spec.shared_root) if spec.shared_root else StoreDir(scratch)
    return RayWorker(store, engine, layout, spec.config, remote=spec.shared_root is None)


def _node_cache() -> Path:
    return Path(os.environ.get("LTXV_CACHE", Path(tempfile.gettempdir()) / "ltxv-cache"))


def actor_options(*, gpus: int) -> dict[str, Any]:
    """Ray options of a worker actor: one GPU (``gpus=1``) or one CPU; restarted on death, never retried by Ray."""
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    return {**resources, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 2}


class RayWorkers:
    """The driver's side: ``n`` worker actors, each one's loop kept running, all stopped by :meth:`stop`.

    A ``run`` call that ends with the actor's death is made again once Ray has restarted the actor (its constructor
    reloads the models; the job it held comes back through its lease). An actor that reports it could not start is
    dropped with its reason logged; ``on_fatal`` is called once none is left."""

    def __init__(self, spec: ActorSpec, n: int, *, gpus: int = 0, options: dict[str, Any] | None = None) -> None:
        self.spec, self.n, self.gpus = spec, n, gpus
        self.options = options or {}  # more Ray actor options (e.g. custom resources that pick nodes)
        self.actors: list[Any] = []
        self.errors: list[str] = []
        self.restarts = 0
        self.on_fatal: Callable[[], None] = lambda: None
        self.shutdown_ray = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="ray-workers", daemon=True)

    def start(self) -> None:
        import ray

        cls = ray.remote(WorkerActor).options(**actor_options(gpus=self.gpus), **self.options)
        self.actors = [cls.remote(self.spec) for _ in range(self.n)]
        self._thread.start()

    def _supervise(self) -> None:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        running = {a.run.remote(): a for a in self.actors}
        while running and not self._stop.is_set():
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                actor = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (RayActorError, ActorUnavailableError) as e:
                    if getattr(e, "actor_init_failed", False):
                        self._failed(actor, " ".join(str(e).split())[:500])
                        continue
                    if self._stop.is_set():
                        continue
                    self.restarts += 1
                    log.warning(
                        "a worker actor died (%s); its loop restarts once Ray has restarted it", type(e).__name__
                    )
                    self._stop.wait(1.0)
                    running[actor.run.remote()] = actor
                    continue
                if "error" in result:
                    self._failed(actor, result["error"])
                elif not self._stop.is_set():
                    running[actor.run.remote()] = actor
        if not running and not self._stop.is_set():
            self.on_fatal()

    def _failed(self, actor: Any, why: str) -> None:
        import ray

        log.error("a worker could not start and is stopped: %s", why)
        self.errors.append(why)
        ray.kill(actor, no_restart=True)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask every loop to stop (a running job is released, queued again at once), then end the actors."""
        import ray

        self._stop.set()
        refs = [a.stop.remote() for a in self.actors]
        deadline = time.monotonic() + timeout_s
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        self._thread.join(max(0.1, deadline - time.monotonic()))
        for a in self.actors:
            ray.kill(a, no_restart=True)
        if self.shutdown_ray:
            ray.shutdown()


def ray_service(
    address: str | None,
    layout: StoreDir,
    spec: ActorSpec,
    workers: int,
    *,
    device: str | None,
) -> tuple[RayJobStore, RayWorkers]:
    """``ltxv serve --ray``: join (or start) the cluster, start the store actor on this node and the worker actors.

    Actors: ``workers`` of them, each owning one GPU when the cluster has GPUs and ``device`` is not the CPU, else one
    CPU (one torch thread each); ``workers=0`` on a GPU cluster: one per GPU."""
    import ray

    from ltxv.serve.ray_store import connect, start_store

    connect(None if address in (None, "local") else address)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
    if workers == 0:
        if not gpus:
            raise RequestError("--workers 0 with --ray means one worker per GPU, and the cluster has no GPU")
        workers = gpus
    store = start_store(layout.root)
    log.info("Ray cluster: %d worker actor(s) on %s each", workers, "a GPU" if gpus else "a CPU")
    if not gpus:
        spec = dataclasses.replace(spec, threads=spec.threads or 1, load={**spec.load, "device": "cpu"})
    pool = RayWorkers(spec, workers, gpus=1 if gpus else 0)
    pool.shutdown_ray = True  # this process joined (or started) Ray for the service: leave it with the service
    return store, pool
