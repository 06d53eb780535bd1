"""A fast fake engine for the service's tests: the same worker loop, step callback and output path as a real model,
with a configurable sleep per step instead of a transformer. A prompt containing ``[crash]`` SIGKILLs the worker
mid-step (a job that always crashes its worker); ``[fail]`` raises.

    python -m ltxv.serve.fake --store DIR [--step-s 0.05] [--steps 4] [--lease-s 2] [--model ltxv-fake]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import numpy as np

from ltxv.pipelines.request import GenerationRequest, Recipe
from ltxv.serve.files import StoreDir
from ltxv.serve.store import SqliteJobStore
from ltxv.serve.worker import Step, Worker, WorkerConfig

FAKE_MODEL = "ltxv-fake"


class FakeEngine:
    def __init__(self, models: tuple[str, ...] = (FAKE_MODEL,), *, step_s: float = 0.05, steps: int = 4) -> None:
        self.models = models
        self.default_recipe = Recipe()
        self.step_s, self.steps = step_s, steps

    def plan(self, request: GenerationRequest) -> list[tuple[int, float]]:
        return [(self.steps, 1.0)]

    def generate(self, request: GenerationRequest, on_step: Callable[[Step], None]) -> np.ndarray:
        rng = np.random.default_rng(request.seed)
        grid = (request.num_frames - 1) // 8 + 1, max(1, request.height // 32), max(1, request.width // 32)
        latents = rng.standard_normal((*grid, 3))
        for i in range(self.steps):
            time.sleep(self.step_s)
            if "[crash]" in request.prompt:
                os.kill(os.getpid(), signal.SIGKILL)
            if "[fail]" in request.prompt:
                raise RuntimeError("the fake engine was asked to fail")
            t = 1.0 - i / self.steps
            on_step(Step(0, 1, i, self.steps, t, latents=lambda t=t: latents * (1.0 - t)))
        # The video: a colour gradient per seed, one shade per frame.
        y, x = np.mgrid[0 : request.height, 0 : request.width]
        base = np.stack([x / max(1, request.width), y / max(1, request.height), rng.random() + 0 * x], axis=-1)
        frames = [(np.clip(base * (0.5 + 0.5 * f / request.num_frames), 0, 1) * 255) for f in range(request.num_frames)]
        return np.stack(frames).astype(np.uint8)

    def preview(self, latents: np.ndarray | None) -> np.ndarray | None:
        if latents is None:
            return None
        return (np.clip(latents * 0.25 + 0.5, 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ltxv.serve.fake", description="a worker on the fake engine")
    p.add_argument("--store", required=True)
    p.add_argument("--model", default=FAKE_MODEL)
    p.add_argument("--step-s", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lease-s", type=float, default=2.0)
    p.add_argument("--poll-s", type=float, default=0.05)
    p.add_argument("--max-jobs", type=int)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fake-worker %(process)d %(levelname)s: %(message)s")
    layout = StoreDir(a.store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = WorkerConfig(lease_s=a.lease_s, poll_s=a.poll_s, progress_s=0.0, preview_s=0.0)
    engine = FakeEngine((a.model,), step_s=a.step_s, steps=a.steps)
    Worker(SqliteJobStore(layout.db), engine, layout, config).run(stop, max_jobs=a.max_jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
