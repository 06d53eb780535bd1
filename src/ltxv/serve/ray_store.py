"""The job store on a Ray cluster: one actor on the head node owns the SQLite file; everyone else calls it.

:class:`StoreActor` holds the one :class:`~ltxv.serve.store.SqliteJobStore` (and the store folder) on the head node's
local disk: the single writer, so the lease, fence and idempotency logic is the very code a single machine runs, and
SQLite's "no network file system" rule is kept however many nodes the workers run on. Lease times are that actor's
clock only (a worker never compares its own clock with a lease). :class:`RayJobStore` is a client with the store's
methods (:class:`~ltxv.serve.store.JobStore`), each one actor call; the API and every worker actor use it.

Files: workers on other nodes do not see the store folder. Unless the folder is on storage every node mounts
(``--shared-outputs``), a worker fetches a job's inputs through :meth:`StoreActor.read_inputs` and sends each output
file's bytes to :meth:`StoreActor.write_output`, which publishes it atomically (temporary file, fsync, rename) on the
head node before the worker commits the job, exactly as a local worker publishes before it commits.

Ray is imported only when a cluster is used; nothing here runs at import time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ltxv.serve.files import StoreDir, publish
from ltxv.serve.store import SqliteJobStore

STORE_ACTOR_NAME = "ltxv-store"
_STORE_METHODS = frozenset(
    (
        "submit claim heartbeat check complete fail release cancel delete get list events stats reap job_ids "
        "worker_alive worker_gone"
    ).split()
)


class StoreActor:
    """The store's owner (run as a Ray actor pinned to the head node, see :func:`start_store`)."""

    def __init__(self, root: str) -> None:
        self.layout = StoreDir(root)
        self.store = SqliteJobStore(self.layout.db)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in _STORE_METHODS:
            raise AttributeError(f"the job store has no method {method!r}")
        return getattr(self.store, method)(*args, **kwargs)

    def root(self) -> str:
        return str(self.layout.root)

    def read_inputs(self, job_id: str) -> dict[str, bytes]:
        """The uploaded media of a job, by file name (empty when it has none)."""
        folder = self.layout.job_inputs(job_id)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}

    def write_output(self, job_id: str, name: str, data: bytes) -> None:
        """Publish one output file of a job atomically in the head node's store folder."""
        publish(self.layout.output_file(job_id, name), lambda tmp: Path(tmp).write_bytes(data))


class RayJobStore:
    """The :class:`~ltxv.serve.store.JobStore` methods as calls to a :class:`StoreActor` (plus its file methods).

    Exceptions raised in the actor arrive as themselves (Ray's task errors are instances of the original type), so
    callers catch ``QueueFull``, ``IdempotencyConflict`` and ``sqlite3.OperationalError`` as on one machine. A call
    made while the actor restarts waits for it, up to ``restart_s`` (but ``submit``: retrying it could insert the job
    twice, so its caller sees the error)."""

    def __init__(self, actor: Any, restart_s: float = 60.0) -> None:
        self.actor = actor
        self.restart_s = restart_s

    def __getattr__(self, method: str) -> Any:
        if method not in _STORE_METHODS:
            raise AttributeError(method)
        return lambda *args, **kwargs: self._call("call", method, *args, **kwargs)

    def read_inputs(self, job_id: str) -> dict[str, bytes]:
        return self._call("read_inputs", job_id)

    def write_output(self, job_id: str, name: str, data: bytes) -> None:
        self._call("write_output", job_id, name, data)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + self.restart_s
        while True:
            try:
                return ray.get(getattr(self.actor, name).remote(*args, **kwargs))
            except ActorUnavailableError:  # restarting (max_restarts=-1): the SQLite file is intact, try again
                if time.monotonic() > deadline or args[:1] == ("submit",):
                    raise
                time.sleep(0.5)


def connect(address: str | None, **init: Any) -> None:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to; "host:port") or, with None,
    start a fresh local instance (never a stale one found in /tmp/ray)."""
    import ray

    ray.init(address=address or "local", include_dashboard=False, **init)


def store_client() -> RayJobStore:
    """A client for the running store actor, found by name (how worker actors reach it: a handle passed as a
    constructor argument would have to outlive every restart of theirs in the object store)."""
    import ray

    return RayJobStore(ray.get_actor(STORE_ACTOR_NAME))


def start_store(root: str | Path) -> RayJobStore:
    """Start the store actor on this (the head) node and return a client for it. The actor restarts if its process
    dies (the database is durable; a call that was in flight may or may not have happened, which the leases and
    idempotency keys already allow for) and is never retried by Ray itself."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = (
        ray.remote(StoreActor)
        .options(
            name=STORE_ACTOR_NAME,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=16,  # the store is thread-safe (a connection per thread); SQLite serialises the writes
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        )
        .remote(str(Path(root).resolve()))
    )
    store = RayJobStore(actor)
    store._call("root")  # wait until it is up (and fail here, clearly, if it cannot open the database)
    return store
