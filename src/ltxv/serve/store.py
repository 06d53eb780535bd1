"""The job store: every job, its events and its result, in one SQLite file (stdlib ``sqlite3``, WAL, JSON payloads).

The guarantees, and how they are kept:

* **At-least-once execution.** A worker *claims* a job with a lease (``lease_until``) and renews it while it works
  (``heartbeat``). A job whose lease has expired, because its worker died, is claimed again by any worker; every
  claim increments ``attempt``. A job whose lease has expired ``max_attempts`` times fails with ``worker_lost`` (a
  job that kills its worker cannot kill them all).
* **At most one committed result.** ``complete`` and ``fail`` are fenced on (job, attempt, owner, running): a worker
  that lost its lease commits nothing, since its ``UPDATE`` matches no row. Outputs are written to a file first and
  the commit names it, so a crash between the two leaves an unreferenced file, which :func:`ltxv.serve.files.sweep`
  removes.
* **Durability.** Every state change is one ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL``, so jobs,
  events and results survive the death of any process (and of the machine). Writers wait on each other through
  ``busy_timeout``; nobody sees "database is locked".

Lease time is the store's own :class:`Clock`: ``time.monotonic`` (one clock for every process of a boot, immune to
wall-clock jumps) tagged with the kernel's boot id, so after a reboot every old lease reads as expired rather than as
years in the future. The file must live on a local disk: SQLite's WAL does not work over a network file system (the
cluster deployment puts a single store process in front of it instead).

Payloads are JSON, never pickle. Timestamps shown to clients (``created_at``...) are wall-clock unix seconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ltxv.serve.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    TERMINAL,
    Claim,
    Event,
    Heartbeat,
    IdempotencyConflict,
    Job,
    JobStore,
    QueueFull,
)

__all__ = [
    "TERMINAL",
    "Claim",
    "Clock",
    "Event",
    "IdempotencyConflict",
    "Job",
    "JobStore",
    "QueueFull",
    "SqliteJobStore",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_owner TEXT,
    lease_epoch TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    progress INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    output TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, model, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, models TEXT NOT NULL, pid INTEGER, host TEXT, started_at REAL, epoch TEXT, alive_until REAL
);
"""
_EXPIRED = "(lease_epoch IS NOT :epoch OR lease_until < :now)"


class Clock:
    """Lease time: ``time.monotonic`` tagged with the boot id (see the module docstring); ``wall`` for display."""

    def __init__(self) -> None:
        try:
            self.epoch = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            self._mono = time.monotonic
        except OSError:  # not Linux: the wall clock, which tolerates no jumps but is shared by every process
            self.epoch, self._mono = "wall", time.time

    def now(self) -> float:
        return self._mono()

    def wall(self) -> float:
        return time.time()


class SqliteJobStore:
    """The job store in one SQLite file; safe to use from many threads and processes on one machine."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.clock = clock or Clock()
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con().execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
        with self._write() as w:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    w.execute(statement)
            row = w.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                w.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: job store schema {row[0]}, this ltxv reads {SCHEMA_VERSION}")

    # --- connections and transactions -----------------------------------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections are not shared), opened lazily, autocommit mode."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            con.execute("PRAGMA synchronous=FULL")
            self._local.con = con
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks between readers
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def _lease(self, lease_s: float) -> dict[str, Any]:
        return {"epoch": self.clock.epoch, "until": self.clock.now() + lease_s}

    def _expiry(self) -> dict[str, Any]:
        return {"epoch": self.clock.epoch, "now": self.clock.now()}

    def _event(self, con: sqlite3.Connection, job_id: str, type_: str, data: dict[str, Any]) -> int:
        (seq,) = con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()
        con.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)", (job_id, seq, self.clock.wall(), type_, json.dumps(data))
        )
        return seq

    def _count(self, con: sqlite3.Connection, name: str, by: float = 1.0) -> None:
        con.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def _finish(self, con: sqlite3.Connection, seq: int, job_id: str, error: dict[str, Any]) -> None:
        """Fail a job that no worker holds (reaped, cancelled while queued)."""
        con.execute(
            "UPDATE jobs SET state = 'failed', error = ?, completed_at = ?, lease_owner = NULL WHERE seq = ?",
            (json.dumps(error), self.clock.wall(), seq),
        )
        self._event(con, job_id, "failed", {"error": error})
        self._count(con, "failed")

    # --- submission ---------------------------------------------------------------------------------------------

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
    ) -> tuple[Job, bool]:
        """Queue a job; returns (job, created). A known ``idempotency_key`` returns the first job, not a new one
        (:class:`IdempotencyConflict` if ``fingerprint`` differs); a full queue raises :class:`QueueFull`."""
        with self._write() as con:
            if idempotency_key is not None:
                row = con.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    if fingerprint is not None and row["fingerprint"] not in (None, fingerprint):
                        raise IdempotencyConflict(idempotency_key)
                    return _job(row), False
            if max_queue is not None:
                (queued,) = con.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
                if queued >= max_queue:
                    raise QueueFull(f"the queue holds {queued} jobs (the limit is {max_queue}); try again later")
            con.execute(
                "INSERT INTO jobs (id, idempotency_key, fingerprint, model, state, request, created_at, max_attempts) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, idempotency_key, fingerprint, model, json.dumps(request), self.clock.wall(), max_attempts),
            )
            self._event(con, job_id, "queued", {})
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(row), True

    # --- the worker side --------------------------------------------------------------------------------------------

    def reap(self) -> int:
        """End what no worker will: expired leases at ``max_attempts`` (``worker_lost``), expired leases of cancelled
        jobs, and deleted jobs that nobody runs any more. Returns how many jobs it ended or removed."""
        with self._write() as con:
            return self._reap(con)

    def _reap(self, con: sqlite3.Connection) -> int:
        done = 0
        expired = con.execute(
            f"SELECT seq, id, lost, max_attempts, cancel_requested, deleted FROM jobs "
            f"WHERE state = 'running' AND {_EXPIRED} AND (lost + 1 >= max_attempts OR cancel_requested = 1)",
            self._expiry(),
        ).fetchall()
        for r in expired:
            if r["cancel_requested"]:
                error = {"code": "cancelled", "message": "the job was cancelled", "param": None}
            else:
                message = f"the job's worker died {r['lost'] + 1} times (max_attempts {r['max_attempts']})"
                error = {"code": "worker_lost", "message": message, "param": None}
            con.execute("UPDATE jobs SET lost = lost + 1 WHERE seq = ?", (r["seq"],))
            self._finish(con, r["seq"], r["id"], error)
            done += 1
        gone = con.execute("SELECT id FROM jobs WHERE deleted = 1 AND state != 'running'").fetchall()
        for r in gone:
            con.execute("DELETE FROM events WHERE job_id = ?", (r["id"],))
            con.execute("DELETE FROM jobs WHERE id = ?", (r["id"],))
        return done + len(gone)

    def claim(self, owner: str, lease_s: float, models: Sequence[str] | None = None) -> Claim | None:
        """The oldest job of ``models`` that is queued or whose lease has expired, now held by ``owner``."""
        names = {f"m{i}": m for i, m in enumerate(models or ())}
        only = "" if models is None else f"AND model IN ({', '.join(':' + k for k in names)})"
        with self._write() as con:
            self._reap(con)
            row = con.execute(
                f"SELECT seq, id, state FROM jobs WHERE deleted = 0 {only} AND "
                f"(state = 'queued' OR (state = 'running' AND {_EXPIRED})) ORDER BY seq LIMIT 1",
                {**names, **self._expiry()},
            ).fetchone()
            if row is None:
                return None
            lease = self._lease(lease_s)
            lost = int(row["state"] == "running")
            claimed = con.execute(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, lost = lost + ?, lease_owner = ?, "
                "lease_epoch = ?, lease_until = ?, started_at = COALESCE(started_at, ?) WHERE seq = ? RETURNING *",
                (lost, owner, lease["epoch"], lease["until"], self.clock.wall(), row["seq"]),
            ).fetchone()
            job = _job(claimed)
            self._event(con, job.id, "started", {"attempt": job.attempt, "worker": owner, "reclaimed": bool(lost)})
            return Claim(job, job.attempt, owner)

    _FENCE = "id = ? AND attempt = ? AND lease_owner = ? AND state = 'running'"

    def _fence(self, claim: Claim) -> tuple[str, int, str]:
        return claim.job.id, claim.attempt, claim.owner

    def heartbeat(
        self,
        claim: Claim,
        lease_s: float,
        *,
        progress: int | None = None,
        status: dict[str, Any] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> Heartbeat:
        """Renew the lease and record progress (monotonic: never below what any attempt reported, never 100 before
        the commit); "cancel" when a cancel was requested, "lost" when the claim is no longer this worker's."""
        lease = self._lease(lease_s)
        with self._write() as con:
            row = con.execute(
                "UPDATE jobs SET lease_epoch = ?, lease_until = ?, progress = MAX(progress, MIN(?, 99)), "
                f"status = COALESCE(?, status) WHERE {self._FENCE} RETURNING cancel_requested",
                (
                    lease["epoch"],
                    lease["until"],
                    progress or 0,
                    None if status is None else json.dumps(status),
                    *self._fence(claim),
                ),
            ).fetchone()
            if row is None:
                return "lost"
            if event is not None:
                self._event(con, claim.job.id, *event)
            return "cancel" if row["cancel_requested"] else "ok"

    def check(self, claim: Claim) -> Heartbeat:
        """The cheap per-step question (a read): go on, stop for a cancel, or stop because the claim is lost."""
        row = (
            self._con().execute(f"SELECT cancel_requested FROM jobs WHERE {self._FENCE}", self._fence(claim)).fetchone()
        )
        return "lost" if row is None else "cancel" if row["cancel_requested"] else "ok"

    def complete(self, claim: Claim, output: dict[str, Any], status: dict[str, Any] | None = None) -> str:
        """The fenced commit of a result: "completed"; "cancelled" if a cancel was recorded first (the cancel wins
        and the output is dropped); "lost" if this claim no longer holds the job (nothing is written)."""
        with self._write() as con:
            row = con.execute(
                f"SELECT cancel_requested, status FROM jobs WHERE {self._FENCE}", self._fence(claim)
            ).fetchone()
            if row is None:
                return "lost"
            if row["cancel_requested"]:
                self._cancelled(con, claim)
                return "cancelled"
            merged = {**json.loads(row["status"]), **(status or {})}
            con.execute(
                "UPDATE jobs SET state = 'completed', progress = 100, output = ?, status = ?, completed_at = ?, "
                f"lease_owner = NULL WHERE {self._FENCE}",
                (json.dumps(output), json.dumps(merged), self.clock.wall(), *self._fence(claim)),
            )
            self._event(con, claim.job.id, "completed", {"output": output})
            self._count(con, "completed")
            for name in ("steps", "step_seconds"):
                if name in merged.get("timings", {}):
                    self._count(con, name, float(merged["timings"][name]))
            return "completed"

    def _cancelled(self, con: sqlite3.Connection, claim: Claim) -> None:
        error = {"code": "cancelled", "message": "the job was cancelled", "param": None}
        con.execute(
            "UPDATE jobs SET state = 'failed', error = ?, completed_at = ?, lease_owner = NULL WHERE id = ?",
            (json.dumps(error), self.clock.wall(), claim.job.id),
        )
        self._event(con, claim.job.id, "failed", {"error": error})
        self._count(con, "failed")

    def fail(self, claim: Claim, error: dict[str, Any], *, retryable: bool = False) -> str:
        """The fenced commit of a failure: "failed", "retrying" (``retryable`` and attempts left: queued again),
        "cancelled" (a cancel was recorded: that is the outcome), or "lost"."""
        with self._write() as con:
            row = con.execute(
                f"SELECT cancel_requested, max_attempts FROM jobs WHERE {self._FENCE}", self._fence(claim)
            ).fetchone()
            if row is None:
                return "lost"
            if row["cancel_requested"] or error.get("code") == "cancelled":
                self._cancelled(con, claim)
                return "cancelled"
            if retryable and claim.attempt < row["max_attempts"]:
                con.execute(
                    f"UPDATE jobs SET state = 'queued', lease_owner = NULL WHERE {self._FENCE}", self._fence(claim)
                )
                self._event(con, claim.job.id, "retrying", {"attempt": claim.attempt, "error": error})
                return "retrying"
            con.execute(
                f"UPDATE jobs SET state = 'failed', error = ?, completed_at = ?, lease_owner = NULL WHERE {self._FENCE}",
                (json.dumps(error), self.clock.wall(), *self._fence(claim)),
            )
            self._event(con, claim.job.id, "failed", {"error": error})
            self._count(con, "failed")
            return "failed"

    def release(self, claim: Claim) -> bool:
        """Give a job back unfinished (a worker shutting down): queued again at once, and this does not count as a
        lost worker."""
        with self._write() as con:
            cur = con.execute(
                f"UPDATE jobs SET state = 'queued', lease_owner = NULL WHERE {self._FENCE}", self._fence(claim)
            )
            if cur.rowcount:
                self._event(con, claim.job.id, "retrying", {"attempt": claim.attempt, "released": True})
            return bool(cur.rowcount)

    # --- the client side ----------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job | None:
        """Idempotent. A queued job fails with ``cancelled`` now; a running one is flagged and its worker stops
        within one step; a finished one is left as it is. None if there is no such job."""
        with self._write() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] == "queued":
                error = {"code": "cancelled", "message": "the job was cancelled before it started", "param": None}
                self._finish(con, row["seq"], job_id, error)
            elif row["state"] == "running" and not row["cancel_requested"]:
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE seq = ?", (row["seq"],))
            return _job(con.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone())

    def delete(self, job_id: str) -> bool:
        """Remove a job and its events (its files are the caller's). A running job is cancelled first and
        disappears at once for clients; its row goes when its worker has stopped (``reap``)."""
        with self._write() as con:
            row = con.execute("SELECT seq, state FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
            if row is None:
                return False
            if row["state"] == "running":
                con.execute(
                    "UPDATE jobs SET deleted = 1, cancel_requested = 1, idempotency_key = NULL WHERE seq = ?",
                    (row["seq"],),
                )
            else:
                con.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                con.execute("DELETE FROM jobs WHERE seq = ?", (row["seq"],))
            return True

    def get(self, job_id: str) -> Job | None:
        row = self._con().execute("SELECT * FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def exists(self, job_id: str) -> bool:
        """Whether a row holds ``job_id``, deleted-but-running included (its files are still in use)."""
        return self._con().execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> tuple[list[Job], bool]:
        """A page of jobs in creation order (``order`` "asc" or "desc") after the job ``after``; (jobs, has_more).
        ``after`` must name an existing job (KeyError otherwise)."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, got {order!r}")
        con = self._con()
        where, args = "deleted = 0", []
        if after is not None:
            row = con.execute("SELECT seq FROM jobs WHERE id = ? AND deleted = 0", (after,)).fetchone()
            if row is None:
                raise KeyError(after)
            where += " AND seq > ?" if order == "asc" else " AND seq < ?"
            args.append(row["seq"])
        rows = con.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY seq {order.upper()} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    def events(self, job_id: str, after_seq: int = 0) -> list[Event]:
        rows = (
            self._con()
            .execute("SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after_seq))
            .fetchall()
        )
        return [Event(r["job_id"], r["seq"], r["ts"], r["type"], json.loads(r["data"])) for r in rows]

    def stats(self) -> dict[str, float]:
        """Queue depth, running jobs, live workers and the counters (completed, failed, steps, step_seconds)."""
        con = self._con()
        out: dict[str, float] = {"queued": 0, "running": 0, "completed": 0, "failed": 0, "steps": 0, "step_seconds": 0}
        for state, n in con.execute("SELECT state, COUNT(*) FROM jobs WHERE deleted = 0 GROUP BY state"):
            if state in ("queued", "running"):
                out[state] = n
        out |= {name: value for name, value in con.execute("SELECT name, value FROM counters")}
        (out["workers"],) = con.execute(
            "SELECT COUNT(*) FROM workers WHERE epoch = ? AND alive_until >= ?", (self.clock.epoch, self.clock.now())
        ).fetchone()
        return out

    def job_ids(self) -> dict[str, Job]:
        """Every job row (deleted-but-running ones too), for the sweeper."""
        return {r["id"]: _job(r) for r in self._con().execute("SELECT * FROM jobs")}

    # --- the worker registry (for /healthz and /metrics) -------------------------------------------------------

    def worker_alive(self, worker: str, models: Sequence[str], ttl_s: float, *, pid: int, host: str) -> None:
        with self._write() as con:
            con.execute(
                "INSERT INTO workers VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "alive_until = excluded.alive_until, epoch = excluded.epoch",
                (
                    worker,
                    json.dumps(list(models)),
                    pid,
                    host,
                    self.clock.wall(),
                    self.clock.epoch,
                    self.clock.now() + ttl_s,
                ),
            )

    def live_workers(self) -> list[dict[str, Any]]:
        rows = self._con().execute(
            "SELECT * FROM workers WHERE epoch = ? AND alive_until >= ?", (self.clock.epoch, self.clock.now())
        )
        return [{"id": r["id"], "pid": r["pid"], "host": r["host"], "models": json.loads(r["models"])} for r in rows]

    def worker_gone(self, worker: str) -> None:
        with self._write() as con:
            con.execute("DELETE FROM workers WHERE id = ?", (worker,))


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        model=row["model"],
        state=row["state"],
        request=json.loads(row["request"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        progress=row["progress"],
        status=json.loads(row["status"]),
        error=None if row["error"] is None else json.loads(row["error"]),
        output=None if row["output"] is None else json.loads(row["output"]),
        cancel_requested=bool(row["cancel_requested"]),
        lease_owner=row["lease_owner"],
    )
