"""Choices made for speed that depend on the machine: the VAE decode strategy, from the memory a call may use (what
the device has free, and the user's budget ``--max-memory``) and what is fast on this device.

The decode can run in one shot (fastest where the convolution kernels like long inputs; working memory: every
layer's whole activation) or streamed a few latent frames at a time (:mod:`ltxv.model.vae_stream`: the same output,
a fraction of the memory). Which is faster depends on the machine: measured on the mid-sized benchmark VAE at
384x640x49 (:data:`STREAM_SLOWDOWN`), the streamed fp32 decode takes 2.9x the one-shot decode's time on an Intel Xeon
with AMX, while in bf16 it is the faster one (0.7x) (both measured before the streaming window shrank to one output
frame per latent frame); on an AMD EPYC (AVX512-BF16, no AMX) the streamed decode takes 4.0x (fp32) and 7.8x (bf16)
the one-shot time. So :func:`plan_decode` streams when the one-shot decode would not fit in the memory it may
use, or when streaming costs no time here; it decodes in one shot when that fits and is measurably faster; and when
streaming is slower but one shot does not fit, it streams in the largest chunks that fit.

Machines the table does not know stream (memory-safe) and say so once; ``benchmarks/decode_strategy.py`` measures the
row for a new machine.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from ltxv.runtime import capability
from ltxv.runtime.devices import available_memory

log = logging.getLogger(__name__)

# Streamed decode time / one-shot decode time, by (device class, dtype); measured with benchmarks/decode_strategy.py
# (mid VAE, 384x640x49, chunk 1). None: not measured. "cuda": kernel launches make many small calls slow, and a GPU
# that has the memory should not stream (not measured here: no GPU was lent to this work).
STREAM_SLOWDOWN: dict[tuple[str, str], float] = {
    ("cpu-amx", "float32"): 2.9,  # Intel Xeon (AMX-BF16): 4.0 s streamed vs 1.4 s one shot (issue 12)
    ("cpu-amx", "bfloat16"): 0.7,  # 0.5 s vs 0.7 s
    # AMD EPYC (AVX512-BF16, no AMX), 2 threads, under load: 65 s streamed vs 16 s one shot; bf16 84 s vs 11 s
    ("cpu-avx512bf16", "float32"): 4.0,
    ("cpu-avx512bf16", "bfloat16"): 7.8,
    ("cuda", "float32"): 1.5,
    ("cuda", "bfloat16"): 1.5,
}
# The table's ratios hold for decodes of moderate size. A one-shot decode whose working memory is larger than this is
# memory-bound on a CPU, and streaming is faster: the real-size 0.9.5 decoder at 704x480x97 in float32 streamed in
# 0.79x the one-shot time (362 s vs 456 s, 5.9 GiB of one-shot working memory), where at 352x256x49 (0.9 GiB) one
# shot was 3.7x faster (AMD EPYC, benchmarks/vae_decode.py). On a CPU such a decode streams whatever the table says.
LARGE_ONE_SHOT = 3 * 2**30
SLOWER = 1.1  # a streamed decode this much slower than one shot is worth the memory of the one-shot decode
CHUNKS = (1, 2, 4, 8)  # latent frames per streaming step to choose from
MEMORY_MARGIN = 0.9  # of the memory a machine reports free: leave room for the allocator and everything else


@functools.cache
def device_class(device_type: str) -> str:
    """The :data:`STREAM_SLOWDOWN` key of a device: "cuda", "cpu-amx", "cpu-avx512bf16" or "cpu"."""
    if device_type == "cuda":
        return "cuda"
    flags = capability.cpu_flags()
    if "amx_bf16" in flags:
        return "cpu-amx"
    if "avx512_bf16" in flags:
        return "cpu-avx512bf16"
    return "cpu"


def stream_slowdown(device: torch.device | str, dtype: torch.dtype) -> float | None:
    """Streamed / one-shot decode time on this kind of device in ``dtype`` (:data:`STREAM_SLOWDOWN`), or None."""
    key = (device_class(torch.device(device).type), str(dtype).removeprefix("torch."))
    return STREAM_SLOWDOWN.get(key)


@dataclass(frozen=True)
class DecodePlan:
    chunk_frames: int | None  # latent frames per streaming step; None: one shot
    working: int  # estimated working memory of the decode, bytes
    reason: str

    def describe(self) -> str:
        how = "one shot" if self.chunk_frames is None else f"streamed, {self.chunk_frames} latent frame(s) per step"
        return f"VAE decode {how} ({self.reason}; about {self.working / 2**20:.0f} MiB working memory)"


def plan_decode(
    cost: dict[int | None, int],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    room: int | None,
    streamable: bool = True,
) -> DecodePlan:
    """How to decode, given the working memory of each strategy (``cost[None]`` one shot, ``cost[c]`` streamed with
    chunk c, bytes) and the memory the decode may use (``room``, bytes; None: unknown, assume enough)."""
    if not streamable or len(cost) == 1:
        return DecodePlan(None, cost[None], "the decoder cannot stream" if not streamable else "too short to stream")
    fits = room is None or cost[None] <= room
    slowdown = stream_slowdown(device, dtype)
    smallest = min(c for c in cost if c is not None)
    if not fits:
        if slowdown is not None and slowdown > SLOWER:  # streaming is slow here: the largest chunks that fit
            for c in sorted((c for c in cost if c is not None), reverse=True):
                if cost[c] <= room:  # type: ignore[operator]
                    return DecodePlan(c, cost[c], "one shot does not fit; the largest chunk that fits")
        return DecodePlan(smallest, cost[smallest], "one shot does not fit in the memory allowed")
    if slowdown is None:
        _warn_unknown(str(torch.device(device)), str(dtype))
        return DecodePlan(smallest, cost[smallest], "streaming speed unknown on this machine")
    if slowdown > SLOWER and torch.device(device).type == "cpu" and cost[None] > LARGE_ONE_SHOT:
        return DecodePlan(smallest, cost[smallest], "a one-shot decode this large is memory-bound: streaming is faster")
    if slowdown > SLOWER:
        return DecodePlan(None, cost[None], f"streaming is {slowdown:.1f}x slower here and one shot fits")
    return DecodePlan(smallest, cost[smallest], "streaming is as fast here")


@functools.cache
def _warn_unknown(device: str, dtype: str) -> None:
    log.info(
        "no measured decode strategy for %s (%s) in %s: streaming (the least memory); "
        "benchmarks/decode_strategy.py measures it",
        device,
        dtype,
        device_class(torch.device(device).type),
    )


def room(device: torch.device | str, max_memory: int | None) -> int | None:
    """The memory a stage may take on the device beyond the weights it holds: what the device has free now (times
    :data:`MEMORY_MARGIN`), and no more than ``max_memory`` (the preflight's budget for a run's memory beyond the
    weights, bytes). None when neither is known."""
    free = available_memory(torch.device(device))
    options = [] if free is None else [int(free * MEMORY_MARGIN)]
    if max_memory is not None:
        options.append(max_memory)
    return max(0, min(options)) if options else None
