"""The service on a local Ray cluster of CPU actors, on the offline model: jobs submitted through the API complete;
a worker actor SIGKILLed mid-job (and, slow, the raylet of a second node) loses no job and commits one result per
job; the output is the single-machine worker's, byte for byte. Every test is bounded in time and shuts Ray down."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ltxv.serve.worker")  # the service (issue 8)

from serve_support import (  # noqa: E402
    assert_store_consistent,
    free_port,
    live_server,
    service_config,
    thread_workers,
    wait_for,
)

from ltxv.pipelines.presets import get_preset  # noqa: E402
from ltxv.serve.api import create_app  # noqa: E402
from ltxv.serve.cli import DEMO_MODEL, offline_model  # noqa: E402
from ltxv.serve.engine import load_engine  # noqa: E402
from ltxv.serve.files import StoreDir  # noqa: E402
from ltxv.serve.ray_store import RayJobStore, start_store  # noqa: E402
from ltxv.serve.ray_workers import ActorSpec, RayWorkers  # noqa: E402
from ltxv.serve.worker import WorkerConfig  # noqa: E402

RECIPE = get_preset("ltxv-2b-0.9.8-distilled")
LEASE_S = 3.0
# The test machine is shared: Ray's memory monitor would kill our actors for other processes' memory (the leases
# recover from that too, but slowly). Set in the environment of every raylet a test starts.
NO_OOM_KILLER = {"RAY_memory_monitor_refresh_ms": "0"}
JOB = {"size": "96x64", "num_frames": 17}


def _spec(**kw: Any) -> ActorSpec:
    config = WorkerConfig(lease_s=LEASE_S, poll_s=0.05, progress_s=0.0, preview_s=0.5)
    base = {"load": {"dtype": torch.float32, "device": "cpu"}, "names": (DEMO_MODEL,), "recipe": RECIPE}
    return ActorSpec(**{**base, "config": config, "offline": True, "threads": 1, **kw})


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh local cluster: a head node with 2 CPUs (one per worker actor; the store actor takes none)."""
    from ray.cluster_utils import Cluster

    for k, v in NO_OOM_KILLER.items():
        monkeypatch.setenv(k, v)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@dataclass
class Service:
    store: RayJobStore
    layout: StoreDir
    workers: RayWorkers
    client: Any

    def submit(self, **fields: Any) -> str:
        r = self.client.post("/v1/videos", json={"prompt": "a red kite", **JOB, **fields})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def wait(self, ids: list[str], timeout: float) -> list[Any]:
        def done() -> list[Any] | None:
            jobs = [self.store.get(i) for i in ids]
            return jobs if all(j.state in ("completed", "failed") for j in jobs) else None

        return wait_for(done, timeout, "every job to finish", interval=0.2)


@contextlib.contextmanager
def service(root: Path, n: int, **workers: Any) -> Iterator[Service]:
    """The API (uvicorn in a thread) and ``n`` worker actors on a store actor; everything stopped on exit."""
    import httpx
    import uvicorn

    layout = StoreDir(root)
    store = start_store(root)
    pool = RayWorkers(_spec(), n, **workers)
    pool.start()
    app = create_app(store, layout, service_config(models=(DEMO_MODEL,), default_recipe=RECIPE))  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the API to start")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer test-token"}
        ) as client:
            yield Service(store, layout, pool, client)
    finally:
        server.should_exit = True
        thread.join(30)
        pool.stop(timeout_s=30)


def _single_machine_video(tmp: Path, seed: int) -> bytes:
    """The same request through the same API and the single-machine worker loop (a thread on a local SQLite store)."""
    ckpt, up, text = offline_model(tmp / "offline-model")
    load = {"checkpoint": ckpt, "upsampler": up, "text_encoder": text, "dtype": torch.float32, "device": "cpu"}
    engine = load_engine(load, names=(DEMO_MODEL,), default_recipe=RECIPE, preview_cache=None)
    config = {"models": (DEMO_MODEL,), "default_recipe": RECIPE}
    with live_server(tmp / "store", **config) as live, thread_workers(live, 1, engine=engine), live.client() as c:
        r = c.post("/v1/videos", json={"prompt": "a red kite", **JOB, "seed": seed})
        job_id = r.json()["id"]
        wait_for(lambda: live.store.get(job_id).state in ("completed", "failed"), 120, "the local job")
        got = c.get(f"/v1/videos/{job_id}/content")
        assert got.status_code == 200, got.text
        return got.content


def _owner_pid(job: Any) -> int:
    return int(job.lease_owner.split(":")[2])  # "ray:<host>:<pid>"


def test_jobs_complete_and_a_killed_actor_loses_none(cluster, tmp_path: Path) -> None:
    with service(tmp_path / "store", 2) as svc:
        ids = [svc.submit(seed=s) for s in (1, 2, 3)]
        running = wait_for(
            lambda: next((j for j in map(svc.store.get, ids) if j.state == "running" and j.progress > 0), None),
            120,
            "a job to be mid-way",
        )
        os.kill(_owner_pid(running), signal.SIGKILL)  # the actor's process, mid-job; Ray restarts the actor
        jobs = svc.wait(ids, timeout=240)
        assert [j.state for j in jobs] == ["completed"] * 3
        assert svc.store.get(running.id).attempt == 2  # claimed again after its lease expired
        assert svc.workers.restarts >= 1
        assert_store_consistent(svc.store, svc.layout)  # one committed output per job, nothing orphaned
        got = svc.client.get(f"/v1/videos/{ids[0]}/content")
        assert got.status_code == 200
        assert svc.client.get(f"/v1/videos/{ids[0]}/preview").content[:2] == b"\xff\xd8"  # sent from the actor
        assert any(e.type == "preview" for e in svc.store.events(ids[0]))
    assert got.content == _single_machine_video(tmp_path / "single", seed=1)


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A head node (resource "head") and a second node on this machine (its own raylet, resource "side")."""
    from ray.cluster_utils import Cluster

    for k, v in NO_OOM_KILLER.items():
        monkeypatch.setenv(k, v)
    c = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False}
    )
    side = c.add_node(num_cpus=1, resources={"side": 1})
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, side
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.slow
def test_a_dead_nodes_jobs_come_back_after_their_leases(two_nodes, tmp_path: Path) -> None:
    """SIGKILL-equivalent of a node: its raylet (and with it every process of that node) is killed mid-job; the job
    is claimed again by the head node's worker once its lease expires, and every job commits one result."""
    cluster, side = two_nodes
    with service(tmp_path / "store", 1, options={"resources": {"head": 0.01}}) as svc:
        remote = RayWorkers(_spec(), 1, options={"resources": {"side": 0.01}})
        remote.start()
        try:
            side_pid = ray.get(remote.actors[0][0].where.remote(), timeout=120)["pid"]
            ids = [svc.submit(seed=s) for s in (1, 2, 3, 4)]
            on_side = wait_for(
                lambda: next(
                    (
                        j
                        for j in map(svc.store.get, ids)
                        if j.state == "running" and j.lease_owner.endswith(f":{side_pid}")
                    ),
                    None,
                ),
                180,
                "a job running on the second node",
            )
            cluster.remove_node(side, allow_graceful=False)  # kills that node's raylet and its workers
            jobs = svc.wait(ids, timeout=300)
        finally:
            remote.stop(timeout_s=10)
        assert [j.state for j in jobs] == ["completed"] * 4
        assert svc.store.get(on_side.id).attempt == 2
        assert_store_consistent(svc.store, svc.layout)


@pytest.mark.slow
def test_a_missing_model_file_stops_that_worker_not_the_job(cluster, tmp_path: Path) -> None:
    with service(tmp_path / "store", 1) as svc:
        broken = _spec(offline=False, load={"checkpoint": str(tmp_path / "absent.safetensors"), "device": "cpu"})
        bad = RayWorkers(broken, 1)
        bad.start()
        try:
            wait_for(lambda: bad.errors, 120, "the broken worker to report")
            job = svc.wait([svc.submit(seed=1)], timeout=120)[0]
        finally:
            bad.stop(timeout_s=10)
    assert job.state == "completed" and job.attempt == 1
    assert len(bad.errors) == 1 and "absent.safetensors: no such file" in bad.errors[0]


@pytest.mark.slow
def test_a_worker_on_two_ranks_runs_each_job_on_both(cluster, tmp_path: Path) -> None:
    """One worker owning two CPU "devices" (a placement group of two bundles, gloo): its jobs run sequence-parallel
    on both ranks and give the single-machine video; a job cancelled mid-way stops both ranks at the same step, so
    the next job runs normally (no rank is left in a collective)."""
    with service(tmp_path / "store", 0) as svc:
        gang = RayWorkers(_spec(ranks=2), 1)
        gang.start()
        try:
            first = svc.submit(seed=1, num_inference_steps=40)
            wait_for(lambda: svc.store.get(first).progress > 5, 120, "the long job to be mid-way")
            assert svc.client.post(f"/v1/videos/{first}/cancel").status_code == 200
            ids = [svc.submit(seed=1), svc.submit(seed=2)]
            jobs = svc.wait([first, *ids], timeout=240)
            video = svc.client.get(f"/v1/videos/{ids[0]}/content").content
        finally:
            gang.stop(timeout_s=30)
        assert jobs[0].state == "failed" and jobs[0].error["code"] == "cancelled"
        assert [j.state for j in jobs[1:]] == ["completed"] * 2
        assert gang.restarts == 0
    assert video == _single_machine_video(tmp_path / "single", seed=1)


@pytest.mark.slow
def test_ltxv_serve_ray_command(tmp_path: Path) -> None:
    """The real command: ``ltxv serve --ray --workers 1`` (a local Ray instance it starts and stops itself)."""
    import subprocess
    import sys

    import httpx

    port = free_port()
    argv = [sys.executable, "-m", "ltxv", "serve", "--ray", "--workers", "1", "--port", str(port), "--device", "cpu"]
    argv += ["--store", str(tmp_path / "store"), "--token", "test-token", "--lease-s", "5"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **NO_OOM_KILLER, "OMP_NUM_THREADS": "1"}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer test-token"}) as c:

            def up() -> bool:
                try:
                    return c.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, 120, "ltxv serve --ray to answer")
            job = c.post("/v1/videos", json={"prompt": "a red kite", **JOB, "seed": 1}).json()["id"]
            wait_for(lambda: c.get(f"/v1/videos/{job}").json()["status"] == "completed", 180, "the job")
            assert c.get(f"/v1/videos/{job}/content").content[4:8] == b"ftyp"  # an mp4
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
        log.close()
    # A graceful stop: uvicorn re-raises the SIGTERM after its shutdown, and Ray's driver handler exits with it.
    assert code in (0, signal.SIGTERM, -signal.SIGTERM), (tmp_path / "serve.log").read_text()[-3000:]
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
