"""Shared pieces of the service tests: a live server on 127.0.0.1 in a thread, workers in threads or in real
processes, and the end-of-test invariants (every job terminal, one output per completed job, no orphan files)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ltxv.pipelines.presets import get_preset
from ltxv.serve.api import ServiceConfig, create_app
from ltxv.serve.fake import FakeEngine
from ltxv.serve.files import PREVIEW, TEMP_PREFIX, StoreDir, sweep
from ltxv.serve.jobspec import Limits
from ltxv.serve.store import SqliteJobStore
from ltxv.serve.worker import Engine, Worker, WorkerConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
MODEL = "ltxv-fake"
TOKEN = "test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def service_config(**kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "models": (MODEL,),
        "default_recipe": get_preset("ltxv-2b-0.9.8-distilled"),
        "default_preset": "ltxv-2b-0.9.8-distilled",
        "sweep_s": 0,
        "suggested": {"size": "96x64", "num_frames": 17},
        "limits": Limits(max_upload_bytes=4 * 2**20),
    }
    return ServiceConfig(**{**base, **kw})


@dataclass
class LiveServer:
    url: str
    store: SqliteJobStore
    layout: StoreDir
    server: Any

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextlib.contextmanager
def live_server(root: Path, **config: Any) -> Iterator[LiveServer]:
    """The API under uvicorn on a free loopback port, in a thread; stopped on exit."""
    import uvicorn

    layout = StoreDir(root)
    store = SqliteJobStore(layout.db)
    app = create_app(store, layout, service_config(**config))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the server to start")
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", store, layout, server)
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def thread_workers(live: LiveServer, n: int = 1, engine: Engine | None = None, **config: Any) -> Iterator[list[Worker]]:
    """``n`` workers on the live server's store, in threads; stopped (and joined) on exit."""
    stop = threading.Event()
    cfg = WorkerConfig(**{"lease_s": 5.0, "poll_s": 0.02, "progress_s": 0.0, "preview_s": 0.0, **config})
    workers = [
        Worker(SqliteJobStore(live.layout.db), engine or FakeEngine(step_s=0.01), live.layout, cfg) for _ in range(n)
    ]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        yield workers
    finally:
        stop.set()
        for t in threads:
            t.join(60)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "LTXV_SERVE_FAILPOINT"}
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return {**e, **extra}


class Processes:
    """Real processes started by a test, each killed (SIGKILL) and reaped at the end, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, argv: list[str], name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb") as log:
            p = subprocess.Popen([sys.executable, *argv], env=env(**extra_env), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def fake_worker(
        self,
        store: Path,
        *,
        model: str = MODEL,
        step_s: float = 0.05,
        steps: int = 4,
        lease_s: float = 1.0,
        **extra_env: str,
    ) -> subprocess.Popen[bytes]:
        argv = ["-m", "ltxv.serve.fake", "--store", str(store), "--model", model, "--step-s", str(step_s)]
        argv += ["--steps", str(steps), "--lease-s", str(lease_s)]
        return self.start(argv, "worker", **extra_env)

    def kill(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(30)

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)

    def logs(self) -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(self.log_dir.glob("*.log"))
        )


def assert_store_consistent(store: SqliteJobStore, layout: StoreDir) -> None:
    """Every job terminal; each completed job names exactly one video that exists; after a sweep, no file that no
    job names (no temporary files, no other attempts' outputs, no folders of unknown jobs)."""
    sweep(store, layout, grace_s=0)
    jobs = store.job_ids()
    for job in jobs.values():
        assert job.state in ("completed", "failed"), (job.id, job.state)
    for folder in layout.outputs.iterdir() if layout.outputs.is_dir() else []:
        job = jobs.get(folder.name)
        assert job is not None, f"orphan folder {folder}"
        names = {p.name for p in folder.iterdir()}
        assert not any(n.startswith(TEMP_PREFIX) or ".partial" in n for n in names), names
        if job.state == "completed":
            assert names - {PREVIEW} == set(job.output.values()), (names, job.output)
            assert (folder / job.output["video"]).stat().st_size > 0
        else:
            assert names <= {PREVIEW}, names
    for job in jobs.values():
        if job.state == "completed":
            assert (layout.job_outputs(job.id) / job.output["video"]).is_file()
    if layout.inputs.is_dir():
        assert {p.name for p in layout.inputs.iterdir()} <= set(jobs)
