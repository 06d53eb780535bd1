"""The job model every store speaks: a :class:`Job`, a worker's :class:`Claim` on one attempt of it, its
:class:`Event` log, and the :class:`JobStore` protocol the API and the workers use (``ltxv.serve.store`` implements
it on SQLite; the cluster deployment puts the same methods behind an actor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

State = Literal["queued", "running", "completed", "failed"]
TERMINAL = ("completed", "failed")
Heartbeat = Literal["ok", "cancel", "lost"]
DEFAULT_MAX_ATTEMPTS = 3


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already: try later."""


class IdempotencyConflict(Exception):
    """An ``Idempotency-Key`` reused with a different request."""


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    state: State
    request: dict[str, Any]  # the job spec (``ltxv.serve.jobspec``), JSON
    created_at: float
    started_at: float | None
    completed_at: float | None
    attempt: int
    max_attempts: int
    progress: int
    status: dict[str, Any]  # live fields reported by the worker: stage, pass, step, steps, timings
    error: dict[str, Any] | None
    output: dict[str, Any] | None  # file names inside the job's output folder
    cancel_requested: bool
    lease_owner: str | None


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a job: the fence every later write of that worker is checked against."""

    job: Job
    attempt: int
    owner: str


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int  # 1, 2, ... per job: the SSE event id
    ts: float
    type: str  # queued | started | progress | preview | retrying | completed | failed
    data: dict[str, Any] = field(default_factory=dict)


class JobStore(Protocol):
    """What the API and the workers need from a store. :class:`SqliteJobStore` is the implementation; the cluster
    deployment puts one behind an actor with the same methods."""

    def submit(
        self,
        job_id: str,
        model: str,
        request: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_queue: int | None = None,
    ) -> tuple[Job, bool]: ...
    def claim(self, owner: str, lease_s: float, models: Sequence[str] | None = None) -> Claim | None: ...
    def heartbeat(
        self,
        claim: Claim,
        lease_s: float,
        *,
        progress: int | None = None,
        status: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> Heartbeat: ...
    def check(self, claim: Claim) -> Heartbeat: ...
    def complete(self, claim: Claim, output: dict[str, Any], status: dict[str, Any] | None = None) -> str: ...
    def fail(self, claim: Claim, error: dict[str, Any], *, retryable: bool = False) -> str: ...
    def release(self, claim: Claim) -> bool: ...
    def cancel(self, job_id: str) -> Job | None: ...
    def delete(self, job_id: str) -> bool: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]: ...
    def events(self, job_id: str, after_seq: int = 0) -> list[Event]: ...
    def stats(self) -> dict[str, float]: ...
