"""The kill matrix: real API and worker processes on one store, real SIGKILLs, loopback only, bounded in time.

Each case ends with the store's invariants (every job terminal, one output per completed job, no orphan files). The
workers run the fake engine (a sleep per step, through the same step callback and output path as a real model); an
exact kill point (between writing an output and committing it; after a create's commit, before its answer) is a
failpoint: the process SIGKILLs itself there (``LTXV_SERVE_FAILPOINT``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from serve_support import Processes, assert_store_consistent, free_port, wait_for

from ltxv.serve.cli import DEMO_MODEL
from ltxv.serve.files import StoreDir
from ltxv.serve.store import SqliteJobStore

LEASE_S = 1.0


@dataclass
class Cluster:
    root: Path
    procs: Processes
    port: int
    api: object = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_api(self, **env: str) -> None:
        argv = ["-m", "ltxv.serve.cli", "serve", "--workers", "0", "--store", str(self.root), "--port", str(self.port)]
        argv += ["--lease-s", str(LEASE_S), "--max-attempts", "3"]
        self.api = self.procs.start(argv, "api", **env)
        wait_for(self._up, 90, "the API to answer")

    def _up(self) -> bool:
        if self.api.poll() is not None:
            raise AssertionError(f"the API exited with {self.api.returncode}\n{self.procs.logs()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def worker(self, **kw: object) -> object:
        return self.procs.fake_worker(self.root, model=DEMO_MODEL, lease_s=LEASE_S, **kw)

    def submit(self, prompt: str, **headers: str) -> str:
        r = httpx.post(
            f"{self.url}/v1/videos",
            data={"prompt": prompt, "size": "64x64", "num_frames": "9"},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/v1/videos/{job_id}", timeout=30).json()

    def terminal(self, job_id: str, timeout: float = 60) -> dict:
        return wait_for(
            lambda: (j := self.job(job_id))["status"] in ("completed", "failed") and j,
            timeout,
            f"{job_id} to finish",
            0.1,
        )

    @property
    def store(self) -> SqliteJobStore:
        return SqliteJobStore(StoreDir(self.root).db)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("kill")
    procs = Processes(root / "logs")
    c = Cluster(root / "store", procs, free_port())
    try:
        c.start_api()
        yield c
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.close()


def test_sigkill_a_worker_mid_step_and_the_job_is_claimed_again(cluster: Cluster) -> None:
    first = cluster.worker(step_s=0.3, steps=6)
    job_id = cluster.submit("slow")
    wait_for(lambda: cluster.job(job_id)["progress"] > 0, 60, "progress")
    cluster.procs.kill(first)  # SIGKILL mid-step
    assert cluster.job(job_id)["status"] == "in_progress"
    second = cluster.worker(step_s=0.01)
    job = cluster.terminal(job_id)
    assert job["status"] == "completed" and job["ltxv"]["attempt"] == 2
    started = [e.data for e in cluster.store.events(job_id) if e.type == "started"]
    assert [s["reclaimed"] for s in started] == [False, True]
    cluster.procs.kill(second)
    assert_store_consistent(cluster.store, StoreDir(cluster.root))


def test_sigkill_between_the_output_write_and_the_commit_leaves_an_orphan_that_is_swept(cluster: Cluster) -> None:
    doomed = cluster.worker(step_s=0.01, LTXV_SERVE_FAILPOINT="worker.after_output")
    job_id = cluster.submit("commit me")
    assert doomed.wait(60) < 0  # killed by its own SIGKILL
    folder = StoreDir(cluster.root).job_outputs(job_id)
    assert {"a1.mp4", "a1.jpg"} <= {p.name for p in folder.iterdir()}  # written, fsynced, renamed: not committed
    assert cluster.job(job_id)["status"] == "in_progress"
    survivor = cluster.worker(step_s=0.01)
    job = cluster.terminal(job_id)
    assert job["status"] == "completed" and job["ltxv"]["attempt"] == 2
    assert cluster.store.get(job_id).output == {"video": "a2.mp4", "thumbnail": "a2.jpg"}
    cluster.procs.kill(survivor)
    assert_store_consistent(cluster.store, StoreDir(cluster.root))  # a1.* are swept
    assert {p.name for p in folder.iterdir()} == {"a2.mp4", "a2.jpg", "preview.jpg"}


def test_a_job_that_always_crashes_its_worker_fails_with_worker_lost(cluster: Cluster) -> None:
    job_id = cluster.submit("[crash] every time")
    deaths = 0
    deadline = time.monotonic() + 120
    while cluster.job(job_id)["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, cluster.procs.logs()
        w = cluster.worker(step_s=0.01)
        while w.poll() is None and cluster.job(job_id)["status"] not in ("completed", "failed"):
            time.sleep(0.05)
        deaths += w.poll() is not None
        cluster.procs.kill(w)
    job = cluster.job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "worker_lost" and deaths == 3
    assert_store_consistent(cluster.store, StoreDir(cluster.root))


def test_sigkill_the_api_during_a_create(cluster: Cluster) -> None:
    # In the middle of an upload: no row at all, and nothing of the upload is left in the store.
    before = {j.id for j in cluster.store.list(limit=100)[0]}

    def slow_body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhalf\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="input_reference"; filename="a.png"\r\n\r\n\x89PNG'
        for _ in range(400):
            time.sleep(0.05)
            yield b"\0" * 4096

    errors: list[Exception] = []

    def post() -> None:
        try:
            headers = {"content-type": "multipart/form-data; boundary=b"}
            httpx.post(f"{cluster.url}/v1/videos", content=slow_body(), headers=headers, timeout=60)
        except httpx.HTTPError as e:
            errors.append(e)

    t = threading.Thread(target=post)
    t.start()
    time.sleep(1.0)
    cluster.procs.kill(cluster.api)
    t.join(30)
    assert errors and {j.id for j in cluster.store.list(limit=100)[0]} == before
    # After the commit, before the answer: the client sees a dropped connection and retries with its key.
    cluster.start_api(LTXV_SERVE_FAILPOINT="api.after_submit")
    with pytest.raises(httpx.HTTPError):
        cluster.submit("exactly once", **{"Idempotency-Key": "key-1"})
    cluster.api.wait(30)
    cluster.start_api()
    first = cluster.submit("exactly once", **{"Idempotency-Key": "key-1"})
    assert cluster.submit("exactly once", **{"Idempotency-Key": "key-1"}) == first
    assert [j.id for j in cluster.store.list(limit=100)[0] if j.request["prompt"] == "exactly once"] == [first]
    worker = cluster.worker(step_s=0.01)
    cluster.terminal(first)
    cluster.procs.kill(worker)
    assert_store_consistent(cluster.store, StoreDir(cluster.root))


def test_kill_everything_at_once_then_restart(cluster: Cluster) -> None:
    workers = [cluster.worker(step_s=0.2, steps=5) for _ in range(2)]
    ids = [cluster.submit(f"all at once {i}") for i in range(6)]
    wait_for(lambda: cluster.store.stats()["running"] == 2, 60, "two running jobs")
    for p in [cluster.api, *workers]:
        cluster.procs.kill(p)
    running = [i for i in ids if cluster.store.get(i).state == "running"]
    assert len(running) == 2
    cluster.start_api()
    workers = [cluster.worker(step_s=0.01) for _ in range(2)]
    for i in ids:
        assert cluster.terminal(i)["status"] == "completed"
    assert all(cluster.store.get(i).attempt == 2 for i in running)
    for w in workers:
        cluster.procs.kill(w)
    assert_store_consistent(cluster.store, StoreDir(cluster.root))


@pytest.mark.slow
def test_ltxv_serve_restarts_a_dead_worker_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """The real command on the offline model: a job completes, its worker is SIGKILLed and the service starts
    another, the next job completes, and SIGTERM stops the API and its workers."""
    procs = Processes(tmp_path / "logs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store_dir = tmp_path / "s"
    try:
        serve = procs.start(["-m", "ltxv.serve.cli", "serve", "--store", str(store_dir), "--port", str(port)], "serve")
        wait_for(lambda: store_dir.joinpath("jobs.sqlite3").exists(), 120, "the store")
        store = SqliteJobStore(StoreDir(store_dir).db)
        first = wait_for(lambda: store.live_workers(), 300, "a live worker")[0]["pid"]

        def run_one(prompt: str) -> dict:
            job_id = httpx.post(f"{url}/v1/videos", data={"prompt": prompt, "size": "64x64", "num_frames": "9"}).json()[
                "id"
            ]

            def done() -> dict | None:
                job = httpx.get(f"{url}/v1/videos/{job_id}").json()
                return job if job["status"] in ("completed", "failed") else None

            return wait_for(done, 120, prompt)

        assert run_one("before")["status"] == "completed"
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: [w["pid"] for w in store.live_workers() if w["pid"] != first], 300, "a new worker")[0]
        assert run_one("after")["status"] == "completed"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
        wait_for(lambda: not _alive(second), 30, "the worker to stop")
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by its parent) is not alive
        return f.read().split(") ")[-1][0] != "Z"
