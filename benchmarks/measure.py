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


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
