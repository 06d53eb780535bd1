"""What every benchmark measures, the same way: wall time, resident memory (RSS) and its peak per stage, and a run of
one implementation in a fresh process so that its peak RSS is its own.

Peak RSS per stage uses Linux's resettable high-water mark: writing ``5`` to ``/proc/self/clear_refs`` sets ``VmHWM``
back to the current RSS, so ``VmHWM`` read after a stage is that stage's peak. "Working memory" of a stage is its peak
minus the RSS just before it (weights and inputs, resident already, are excluded).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Bytes resident now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss() -> int:
    """Bytes: the high-water mark of RSS since the process started or since the last :func:`reset_peak`."""
    with open("/proc/self/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) * 1024 if m else 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@dataclass
class StageResult:
    seconds: float = 0.0
    rss_before: int = 0
    peak_rss: int = 0

    @property
    def working_memory(self) -> int:
        return max(0, self.peak_rss - self.rss_before)

    def to_dict(self) -> dict:
        return {**asdict(self), "working_memory": self.working_memory}


@dataclass
class Stages:
    """Named stages of one run, in order; ``process_peak_rss`` is the whole process's peak (import and load too)."""

    stages: dict[str, StageResult] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[StageResult]:
        r = StageResult(rss_before=current_rss())
        reset_peak()
        t0 = time.perf_counter()
        try:
            yield r
        finally:
            r.seconds = time.perf_counter() - t0
            r.peak_rss = peak_rss()
            self.stages[name] = r

    def to_dict(self) -> dict:
        return {name: r.to_dict() for name, r in self.stages.items()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, m: int = 4096, repeat: int = 5) -> float:
    """FLOP/s of a (m x n) @ (n x n) matmul, best of ``repeat``: the ceiling the transformer is measured against."""
    a, b = torch.randn(m, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b) for _ in range(repeat))
    return 2 * m * n * n / best


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_isolated(module: str, function: str, kwargs: dict, timeout: float | None = None) -> dict:
    """Call ``benchmarks/<module>.py:<function>(**kwargs)`` in a fresh Python process and return the dict it returns
    (JSON-serialisable), so that each implementation's peak RSS and imports are its own. Raises with the child's
    stderr on failure."""
    here = Path(__file__).resolve().parent
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import importlib; "
        "m = importlib.import_module(sys.argv[2]); r = getattr(m, sys.argv[3])(**json.loads(sys.argv[4])); "
        "print('\\n@@RESULT@@' + json.dumps(r))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(here), module, function, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        raise RuntimeError(f"{module}.{function} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])


def add_video_size(parser: Any, size: tuple[int, int, int]) -> None:
    """``--height``, ``--width``, ``--frames`` with the part's default (height, width, frames)."""
    for flag, default in zip(("--height", "--width", "--frames"), size):
        parser.add_argument(flag, type=int, default=default)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class PhaseClock:
    """Tiles one call into named phases: a hooked function entered during a phase pauses it and runs in its own (e.g.
    the T5 forward inside a pass is "text"); phases repeat and accumulate into ``stages`` (seconds summed, peak RSS
    the highest of its pieces, each piece's peak measured from a reset at its start). ``count`` only sums time and
    calls of a function, without making it a phase."""

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.counters: dict[str, dict[str, float]] = {}
        self._current: str | None = None
        self._t0 = 0.0
        self._stack: list[str | None] = []

    def _switch(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._current is not None:
            r = self.stages.stages[self._current]
            r.seconds += now - self._t0
            r.peak_rss = max(r.peak_rss, peak_rss())
        if name is not None:
            self.stages.stages.setdefault(name, StageResult(rss_before=current_rss()))
            reset_peak()
        self._current = name
        self._t0 = time.perf_counter()

    def enter(self, name: str) -> None:
        self._stack.append(self._current)
        self._switch(name)

    def leave(self, then: str | None = None) -> None:
        outer = self._stack.pop()
        self._switch(then if then is not None and outer is not None else outer)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def hook(self, obj: object, attr: str, name: str, then: str | None = None) -> None:
        """Run ``obj.attr`` as phase ``name``; afterwards the interrupted phase goes on as ``then`` if given."""
        fn = getattr(obj, attr)

        def hooked(*args: Any, **kwargs: Any) -> Any:
            self.enter(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave(then)

        setattr(obj, attr, hooked)

    def count(self, obj: object, attr: str, name: str) -> None:
        fn = getattr(obj, attr)
        c = self.counters.setdefault(name, {"seconds": 0.0, "calls": 0})

        def counted(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                c["seconds"] += time.perf_counter() - t0
                c["calls"] += 1

        setattr(obj, attr, counted)
