"""What the machine can do fast, asked lazily (never at import time)."""

from __future__ import annotations

import functools
from pathlib import Path

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for benchmark reports; "unknown" where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("model name")), "")
    return line.partition(":")[2].strip() or "unknown"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``). Then bf16
    matmuls and convolutions run at about twice the fp32 rate (measured on a 2-core AVX512-BF16 machine: matmul 428
    vs 186 GFLOP/s, the VAE's 3x3x3 convolutions 390-450 vs 50-210 GFLOP/s); without it bf16 is emulated, slower
    than fp32. False where the flags cannot be read."""
    return any(f in cpu_flags() for f in _NATIVE_BF16_FLAGS)
