"""The service's cost: its added time per job against a direct ``Pipeline.generate`` in the same process, and jobs per
minute with 1 and 2 worker processes.

(a) Overhead. One warm :class:`PipelineEngine` on the mid-sized random model of ``end_to_end.py`` (same configs,
same distilled recipe without its STG block list). Interleaved, ``--repeat`` times each: a direct
``pipe.generate(request)`` plus the mp4 write the CLI does (``direct``), and the same request as a job: HTTP create on
the live API (uvicorn, loopback), claimed by a worker thread on the same engine (step callback: heartbeat, progress
events, per-step previews), written and committed, seen completed by polling (``service``). The added time is the
median of ``service - direct``, and its share of ``direct`` (target: under 3%).

(b) Throughput. ``--jobs`` small jobs submitted at once to a store served by N real ``ltxv worker`` processes
(N = 1, 2; each with ``OMP_NUM_THREADS`` = cores / N), timed from the first create to the last completion.

    python benchmarks/service.py --height 320 --width 512 --frames 49 --json service.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from end_to_end import PROMPT, recipe, write_model
from measure import add_video_size

from ltxv.io.video import to_uint8, write_mp4
from ltxv.pipelines.request import GenerationRequest
from ltxv.serve.api import ServiceConfig, create_app
from ltxv.serve.engine import load_engine
from ltxv.serve.files import StoreDir
from ltxv.serve.store import SqliteJobStore
from ltxv.serve.worker import Worker, WorkerConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _serve(root: Path, config: ServiceConfig) -> tuple[Any, str, SqliteJobStore, StoreDir]:
    import socket

    import uvicorn

    layout = StoreDir(root)
    store = SqliteJobStore(layout.db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, layout, config), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}", store, layout


def _wait(client: httpx.Client, job_id: str, poll_s: float) -> dict:
    while True:
        job = client.get(f"/v1/videos/{job_id}").json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(poll_s)


def overhead(kit: dict, request: GenerationRequest, dtype: str, repeat: int, root: Path) -> dict:
    models = {**kit, "dtype": getattr(torch, dtype), "device": "cpu", "residency": "resident", "quantize": None}
    models["compile"] = False
    # The preview map is fitted once per model (not part of a job's time): two clips are enough for the benchmark.
    engine = load_engine(
        models, names=("bench",), default_recipe=request.recipe, preview_cache=root / "maps", fit_clips=2
    )
    config = ServiceConfig(models=("bench",), default_recipe=request.recipe, sweep_s=0)
    server, url, store, layout = _serve(root / "store", config)
    stop = threading.Event()
    worker = Worker(store, engine, layout, WorkerConfig(poll_s=0.01, progress_s=0.0, preview_s=0.0))
    threading.Thread(target=worker.run, args=(stop,), daemon=True).start()
    form = {
        "prompt": request.prompt,
        "size": f"{request.width}x{request.height}",
        "num_frames": str(request.num_frames),
    }
    form |= {"fps": str(request.frame_rate), "seed": str(request.seed)}
    engine.pipe.generate(request)  # warm-up (first-call allocations), not timed
    direct, service, steps = [], [], 0
    with httpx.Client(base_url=url, timeout=3600) as client:
        for i in range(repeat):
            t0 = time.perf_counter()
            video = engine.pipe.generate(request).video
            write_mp4(root / f"direct{i}.mp4", to_uint8(video), request.frame_rate)
            direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            job = _wait(client, client.post("/v1/videos", data=form).json()["id"], 0.01)
            service.append(time.perf_counter() - t0)
            assert job["status"] == "completed", job
            steps = job["ltxv"]["timings"]["steps"]
    stop.set()
    server.should_exit = True
    added = [s - d for s, d in zip(service, direct)]
    return {
        "direct_s": direct,
        "service_s": service,
        "added_s_median": statistics.median(added),
        "added_share": statistics.median(added) / statistics.median(direct),
        "steps_per_job": steps,
        "events_per_job": len(store.events(job["id"])),
    }


def throughput(kit: dict, workers: int, jobs: int, size: tuple[int, int, int], dtype: str, root: Path) -> dict:
    h, w, f = size
    model = Path(kit["checkpoint"]).name.removesuffix(".safetensors")  # the id ``ltxv worker`` serves it under
    config = ServiceConfig(models=(model,), default_recipe=recipe(None), sweep_s=0)
    server, url, _, _ = _serve(root, config)
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OMP_NUM_THREADS"] = str(max(1, cores // workers))
    argv = [sys.executable, "-m", "ltxv.serve.cli", "worker", "--store", str(root), "--checkpoint", kit["checkpoint"]]
    argv += ["--upsampler", kit["upsampler"], "--text-encoder", kit["text_encoder"]]
    argv += ["--dtype", dtype, "--device", "cpu"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)
    ]
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            while client.get("/healthz").json()["workers"] < workers:  # loaded and polling
                time.sleep(0.2)
            t0 = time.perf_counter()
            ids = [
                client.post(
                    "/v1/videos", data={"prompt": f"{PROMPT} {i}", "size": f"{w}x{h}", "num_frames": str(f)}
                ).json()["id"]
                for i in range(jobs)
            ]
            done = [_wait(client, i, 0.05) for i in ids]
            elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        server.should_exit = True
    assert all(j["status"] == "completed" for j in done), [j["error"] for j in done]
    return {"workers": workers, "jobs": jobs, "seconds": elapsed, "jobs_per_minute": 60 * jobs / elapsed}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (320, 512, 49))
    p.add_argument("--size", choices=["mid", "tiny"], default="mid")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("-r", "--repeat", type=int, default=3)
    p.add_argument("--jobs", type=int, default=8, help="jobs per throughput run")
    p.add_argument("--job-size", default="64x96x9", help="HxWxF of the throughput jobs (tiny model)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    request = GenerationRequest(
        PROMPT, height=a.height, width=a.width, num_frames=a.frames, frame_rate=25.0, seed=42, recipe=recipe(None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kit = write_model(root / "model", a.size)
        res: dict[str, Any] = {
            "request": {"height": a.height, "width": a.width, "frames": a.frames, "size": a.size, "dtype": a.dtype}
        }
        res["overhead"] = overhead(kit, request, a.dtype, a.repeat, root / "a")
        tiny = write_model(root / "tiny", "tiny")
        size = tuple(int(x) for x in a.job_size.split("x"))
        res["throughput"] = [throughput(tiny, n, a.jobs, size, a.dtype, root / f"b{n}") for n in (1, 2)]  # type: ignore[arg-type]
    o = res["overhead"]
    print(
        f"direct {statistics.median(o['direct_s']):.2f} s, as a job {statistics.median(o['service_s']):.2f} s: "
        f"added {o['added_s_median'] * 1000:.0f} ms = {100 * o['added_share']:.2f}% (target < 3%)"
    )
    for t in res["throughput"]:
        print(
            f"{t['workers']} worker(s): {t['jobs']} jobs in {t['seconds']:.1f} s = {t['jobs_per_minute']:.1f} jobs/min"
        )
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
