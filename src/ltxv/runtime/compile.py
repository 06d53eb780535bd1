"""Opt-in ``torch.compile`` of the transformer, with its compile time measured apart from the run.

The whole forward is compiled (``dynamic=False``): one graph per input shape, so a multi-scale run compiles twice (one
per pass size) and a change of guidance branch count compiles again. Compilation happens inside the first call with a
new shape; that call's time minus a steady-state call of the same shape is the compile time. Only the first two
calls of each shape are timed (with a device sync on CUDA, where calls are asynchronous); later calls run untimed, so
the denoise loop keeps no host syncs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_Key = tuple[Any, ...]


@dataclass
class CompileStats:
    """Per input signature (shapes and dtypes of the call's tensors): the first call's and the second call's time.
    ``seconds`` is the compile time: the sum over signatures of the first call minus the second (the whole first call
    where no second one happened yet)."""

    first: dict[_Key, float] = field(default_factory=dict)
    steady: dict[_Key, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(max(0.0, t - self.steady.get(k, 0.0)) for k, t in self.first.items())

    @property
    def graphs(self) -> int:
        return len(self.first)

    def timed(self, fn: Callable[..., torch.Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        key = _signature(args, kwargs)
        if key in self.steady:
            return fn(*args, **kwargs)
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        _sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(device)
        (self.first if key not in self.first else self.steady)[key] = time.perf_counter() - t0
        if key in self.steady:
            log.info("compile: %.1f s (%d graph%s)", self.seconds, self.graphs, "s" * (self.graphs != 1))
        return out


def compile_transformer(model: nn.Module, mode: str | None = None) -> CompileStats:
    """Compile ``model``'s forward in place (``torch.compile(..., dynamic=False, mode=mode)``; the module keeps its
    type and attributes) and return the stats its calls fill in. ``mode``: torch.compile's, e.g. "max-autotune"."""
    compiled = torch.compile(model.forward, dynamic=False, mode=mode)
    stats = CompileStats()

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        return stats.timed(compiled, args, kwargs)

    model.forward = forward  # an instance attribute: nn.Module.__call__ looks ``forward`` up on the instance first
    return stats


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Key:
    def leaf(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return (tuple(v.shape), v.dtype, v.device.type)
        if isinstance(v, (tuple, list)):
            return tuple(leaf(x) for x in v)
        return v if v is None or isinstance(v, (int, float, str, bool)) else type(v).__name__

    return (leaf(args), tuple(sorted((k, leaf(v)) for k, v in kwargs.items())))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
