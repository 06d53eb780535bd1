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
    ranks: int = 1  # devices (actors) per worker: each job runs on all of them, its tokens split
    lora_dir: str | None = None  # the LoRAs jobs may name, a folder at this path on every node


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
    """One rank of a worker (run as a Ray actor by :class:`RayWorkers`): the worker itself when ``ranks`` is 1, else
    rank 0 (the worker loop) or a follower (:mod:`ltxv.serve.ray_gang`) of a worker on ``ranks`` devices."""

    def __init__(self, spec: ActorSpec, rank: int = 0) -> None:
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec, self.rank = spec, rank
        self.stop_event = threading.Event()
        self.worker: RayWorker | None = None
        self.pipe: Any = None  # a follower's pipeline
        self.group: Any = None
        self.scratch = Path(tempfile.mkdtemp(prefix="ltxv-ray-worker-"))

    def address(self) -> str:
        """Where rank 0 listens for the other ranks of its worker (this node, a free port)."""
        import ray

        from ltxv.parallel.launch import free_port

        return f"tcp://{ray.util.get_node_ip_address()}:{free_port()}"

    def setup(self, address: str | None) -> dict[str, Any]:
        """Join the worker's process group (``address`` of rank 0; None alone), then load the models on this node.
        {"ok": True}, or {"error": ...} when this node lacks a model file (nothing was claimed)."""
        spec = self.spec
        if self.worker is not None or self.pipe is not None:  # set up already (a loop that returned runs again)
            return {"ok": True}
        try:
            if spec.ranks > 1:
                self.group = _join(address, self.rank, spec.ranks)  # type: ignore[arg-type]
            if self.rank == 0:
                self.worker = _make_worker(store_client(), spec, self.scratch, self.group)
            else:
                self.pipe = _load_pipeline(spec, self.group)
        except (LoadError, RequestError, OSError) as e:  # a model file missing or unreadable on this node
            error = f"{socket.gethostname()}: {' '.join(str(e).split())}"
            log.error("worker could not start: %s", error)
            return {"error": error}
        return {"ok": True}

    def run(self, max_jobs: int | None = None) -> dict[str, Any]:
        """Rank 0: the worker loop until :meth:`stop` (or ``max_jobs``), then the followers are released. A
        follower: every job rank 0 sends. Returns {"ran": n}."""
        if self.rank > 0:
            from ltxv.serve.ray_gang import follow

            return {"ran": follow(self.pipe, self.group)}
        assert self.worker is not None, "setup first"
        self.stop_event.clear()
        try:
            return {"ran": self.worker.run(self.stop_event, max_jobs=max_jobs)}
        finally:
            if self.group is not None:
                self.worker.engine.pipe.stop()

    def stop(self) -> None:
        self.stop_event.set()

    def where(self) -> dict[str, Any]:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "host": socket.gethostname()}


def _join(address: str, rank: int, ranks: int) -> Any:
    import datetime

    import torch.distributed as dist

    from ltxv.parallel.launch import rank_device

    device = rank_device(None, 0)  # Ray gives each rank actor its own GPU, seen as cuda:0
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    # A rank that fails on its own leaves the others waiting in a collective: past this they raise, and the gang
    # is restarted (the job's lease brings it back).
    timeout = datetime.timedelta(minutes=10)
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=ranks, timeout=timeout)
    return dist.group.WORLD


def _load_args(spec: ActorSpec) -> dict[str, Any]:
    load = dict(spec.load)
    if spec.offline:  # the same seeded weights on every node: identical to the single-machine worker's
        from ltxv.serve.cli import offline_model

        load["checkpoint"], load["upsampler"], load["text_encoder"] = offline_model(_node_cache() / "offline-model")
    return load


def _load_pipeline(spec: ActorSpec, group: Any) -> Any:
    from ltxv.pipelines.generate import load_pipeline

    return load_pipeline(**_load_args(spec), group=group)


def _make_worker(store: RayJobStore, spec: ActorSpec, scratch: Path, group: Any = None) -> RayWorker:
    from ltxv.serve.engine import load_engine

    load = _load_args(spec)
    if group is not None:
        load["group"] = group
    engine = load_engine(
        load,
        names=spec.names,
        default_recipe=spec.recipe,
        preview_cache=scratch / "preview-maps",
        lora_dir=spec.lora_dir,
    )
    if group is not None:
        from ltxv.serve.ray_gang import GangPipeline

        engine.pipe = GangPipeline(engine.pipe, group)
    layout = StoreDir(spec.shared_root) if spec.shared_root else StoreDir(scratch)
    return RayWorker(store, engine, layout, spec.config, remote=spec.shared_root is None)


def _node_cache() -> Path:
    return Path(os.environ.get("LTXV_CACHE", Path(tempfile.gettempdir()) / "ltxv-cache"))


def actor_options(*, gpus: int) -> dict[str, Any]:
    """Ray options of a worker rank: one GPU (``gpus=1``) or one CPU; restarted on death, never retried by Ray."""
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    return {**resources, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 2}


class RayWorkers:
    """The driver's side: ``n`` workers of ``spec.ranks`` actors each, every worker's loop kept running, all
    stopped by :meth:`stop`.

    Each worker has a thread here that sets it up (the ranks join one process group and load their models, on one
    node: a placement group with ``STRICT_PACK`` bundles), runs it, and after the death of any of its actors (Ray
    restarts them; the job they held comes back through its lease) kills the rest of that worker's actors and sets
    it up again. A worker that reports it cannot load its models is stopped with its reason logged; ``on_fatal``
    is called once none is left."""

    def __init__(self, spec: ActorSpec, n: int, *, gpus: int = 0, options: dict[str, Any] | None = None) -> None:
        self.spec, self.n, self.gpus = spec, n, gpus
        self.options = options or {}  # more Ray actor options (e.g. custom resources that pick nodes)
        self.actors: list[list[Any]] = []  # per worker, its ranks' actors
        self.errors: list[str] = []
        self.restarts = 0
        self.on_fatal: Callable[[], None] = lambda: None
        self.shutdown_ray = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._alive = n
        self._lock = threading.Lock()

    @property
    def fatal(self) -> str | None:
        """Why the service must stop (every worker failed to start), as :class:`~ltxv.serve.cli.Supervisor` says
        it; None while one is left."""
        with self._lock:
            if self._alive > 0 or not self.errors:
                return None
        return f"no worker could start: {self.errors[-1]}"

    def start(self) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actor = ray.remote(WorkerActor)
        options = {**actor_options(gpus=self.gpus), **self.options}
        k = self.spec.ranks
        for _ in range(self.n):
            if k == 1:
                ranks = [actor.options(**options).remote(self.spec)]
            else:  # the K ranks of one worker on one node
                bundle = {"CPU": 1, **({"GPU": 1} if self.gpus else {})}
                pg = ray.util.placement_group([bundle] * k, strategy="STRICT_PACK")
                ranks = [
                    actor.options(
                        **options,
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
                    ).remote(self.spec, r)
                    for r in range(k)
                ]
            self.actors.append(ranks)
            t = threading.Thread(target=self._supervise, args=(ranks,), name="ray-worker", daemon=True)
            self._threads.append(t)
            t.start()

    def _supervise(self, ranks: list[Any]) -> None:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        while not self._stop.is_set():
            try:
                address = _retry(lambda: ray.get(ranks[0].address.remote()), self._stop) if len(ranks) > 1 else None
                setup = _retry(lambda at=address: ray.get([a.setup.remote(at) for a in ranks]), self._stop)
                errors = [r["error"] for r in setup if "error" in r]
                if errors:
                    return self._failed(ranks, errors[0])
                runs = [a.run.remote() for a in ranks]
                while not self._stop.is_set():
                    done, _ = ray.wait(runs, num_returns=1, timeout=0.5)
                    if done:
                        ray.get(done)  # raises if an actor died; a loop that returned is simply run again
                        break
            except (RayActorError, ActorUnavailableError) as e:
                if self._stop.is_set():
                    return None
                if getattr(e, "actor_init_failed", False):
                    return self._failed(ranks, " ".join(str(e).split())[:500])
                self.restarts += 1
                log.warning("a worker actor died (%s); the worker is set up again", type(e).__name__)
                if len(ranks) > 1:  # the survivors hold a broken process group: restart them too
                    for a in ranks:
                        ray.kill(a, no_restart=False)
                self._stop.wait(1.0)
        return None

    def _failed(self, ranks: list[Any], why: str) -> None:
        import ray

        log.error("a worker could not start and is stopped: %s", why)
        self.errors.append(why)
        for a in ranks:
            ray.kill(a, no_restart=True)
        with self._lock:
            self._alive -= 1
            if self._alive == 0 and not self._stop.is_set():
                self.on_fatal()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask every loop to stop (a running job is released, queued again at once), then end the actors."""
        import ray

        self._stop.set()
        refs = [ranks[0].stop.remote() for ranks in self.actors]
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for ranks in self.actors:
            for a in ranks:
                ray.kill(a, no_restart=True)
        if self.shutdown_ray:
            ray.shutdown()


def _retry(call: Callable[[], Any], stop: threading.Event, timeout_s: float = 300.0) -> Any:
    """``call()``, again while its actor is restarting."""
    from ray.exceptions import ActorUnavailableError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except ActorUnavailableError:
            if stop.is_set() or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def ray_service(
    address: str | None,
    layout: StoreDir,
    spec: ActorSpec,
    workers: int,
    *,
    device: str | None,
) -> tuple[RayJobStore, RayWorkers]:
    """``ltxv serve --ray``: join (or start) the cluster, start the store actor on this node and the worker actors.

    Workers: ``workers`` of them, each of ``spec.ranks`` actors that own one GPU each when the cluster has GPUs and
    ``device`` is not the CPU, else one CPU each (one torch thread); ``workers=0`` on a GPU cluster: as many as its
    GPUs allow."""
    import ray

    from ltxv.serve.ray_store import connect, start_store

    connect(None if address in (None, "local") else address)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
    if workers == 0:
        if gpus < spec.ranks:
            raise RequestError(
                f"--workers 0 with --ray means one worker per {spec.ranks} GPU(s); the cluster has {gpus}"
            )
        workers = gpus // spec.ranks
    store = start_store(layout.root)
    log.info("Ray cluster: %d worker actor(s) on %s each", workers, "a GPU" if gpus else "a CPU")
    if not gpus:
        spec = dataclasses.replace(spec, threads=spec.threads or 1, load={**spec.load, "device": "cpu"})
    pool = RayWorkers(spec, workers, gpus=1 if gpus else 0)
    pool.shutdown_ray = True  # this process joined (or started) Ray for the service: leave it with the service
    return store, pool
