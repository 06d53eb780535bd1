"""Which model lives on which device, and when. Pipelines ask this object; they never move models themselves.

Three modes:

* ``resident``: every model stays on the compute device (fastest; the device holds all weights at once).
* ``offload-text``: T5 (about 9.5 GB in bf16 for the XXL encoder) lives on the CPU and visits the compute device only
  to encode the prompts, like the reference's ``--offload_to_cpu``; the other models stay resident.
* ``sequential``: every model (T5, transformer, upsampler, VAE) lives on the CPU and visits the compute device only
  for its stage, so the device peak is the largest stage's models plus its activations, not the sum of all weights.

A model's host copy is kept when it first goes to the device, so sending it back is a pointer swap, not a copy: the
weights are read-only during inference. With a CUDA device the host copies are pinned and the uploads are
``non_blocking``: they are queued on the current stream before the stage's kernels, which therefore see complete
weights, and the pinned source is never written, so the asynchronous copy is safe.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import nn

if TYPE_CHECKING:
    from ltxv.pipelines.progress import ProgressEvent
    from ltxv.text.t5 import TextEncoder

log = logging.getLogger(__name__)

Mode = Literal["resident", "offload-text", "sequential"]
MODES: tuple[str, ...] = get_args(Mode)
Role = Literal["text_encoder", "transformer", "upsampler", "vae"]


class Residency:
    """The residency policy of one pipeline. ``use(role=model, ...)`` brings models to ``compute`` for a stage and,
    when the mode offloads them, sends them back to the CPU after it. ``trace`` records every decision in order,
    ``("load" | "unload", role)``, also where a move is a no-op (a CPU compute device), so the policy is testable
    anywhere."""

    def __init__(self, compute: torch.device | str, mode: str = "resident") -> None:
        if mode not in MODES:
            raise ValueError(f"residency must be one of {list(MODES)}, got {mode!r}")
        self.compute = torch.device(compute)
        self.mode = mode
        self.storage = torch.device("cpu")
        self.trace: list[tuple[str, str]] = []
        self._host: dict[nn.Module, dict[str, torch.Tensor]] = {}  # host copy of every tensor of a moved module

    def offloads(self, role: str) -> bool:
        return offloads(self.mode, role)

    def home(self, role: str) -> torch.device:
        """Where the model of ``role`` lives between its stages, hence where to load it."""
        return self.storage if self.offloads(role) else self.compute

    @contextmanager
    def use(self, **models: nn.Module | TextEncoder | None) -> Iterator[None]:
        """Run the body with the given models (None ones skipped) on the compute device."""
        given = {role: m for role, m in models.items() if m is not None}
        for role, m in given.items():
            self.trace.append(("load", role))
            self._move(_module(m), self.compute)
        try:
            yield
        finally:
            for role, m in given.items():
                if self.offloads(role):
                    self.trace.append(("unload", role))
                    self._move(_module(m), self.storage)

    @contextmanager
    def use_pass(
        self, transformers: Mapping[str, nn.Module], **models: nn.Module | None
    ) -> Iterator[Callable[[str], None]]:
        """A denoising pass whose steps run ``transformers`` (by label; a hybrid schedule names several) with
        ``models`` beside them; yields ``activate(label)``, to call before each step. One transformer, or a mode that
        keeps transformers resident: all are brought in for the whole pass and ``activate`` does nothing.
        ``sequential`` with several: only the active one is on the device; ``activate`` sends the previous one back
        and brings the step's in. The role of a transformer in the trace is ``transformer`` for the label ``main``
        (a pipeline of one transformer), ``transformer:LABEL`` otherwise."""
        unique: dict[str, nn.Module] = {}
        for label, m in transformers.items():
            if all(m is not other for other in unique.values()):
                unique[label] = m
        if len(unique) == 1 or not self.offloads("transformer"):
            with self.use(**{_role(k): m for k, m in unique.items()}, **models):
                yield lambda label: None
            return
        active: list[str] = []

        def activate(label: str) -> None:
            module = transformers[label]
            if active and transformers[active[0]] is module:
                return
            if active:
                self.trace.append(("unload", _role(active[0])))
                self._move(transformers[active.pop()], self.storage)
            self.trace.append(("load", _role(label)))
            self._move(module, self.compute)
            active.append(label)

        with self.use(**models):
            try:
                yield activate
            finally:
                if active:
                    self.trace.append(("unload", _role(active[0])))
                    self._move(transformers[active.pop()], self.storage)

    def _move(self, module: nn.Module, device: torch.device) -> None:
        if _same(self.compute, self.storage):
            return
        host = self._host.setdefault(module, {})
        pin = self.compute.type == "cuda"
        for name, t in _tensors(module):
            if _same(t.device, device) or t.is_meta:  # meta: not loaded yet (a deferred VAE encoder)
                continue
            if name not in host:  # first move: keep the host copy (pinned for fast, asynchronous uploads)
                on_host = _same(t.device, self.storage)
                if on_host and (t.is_pinned() or not pin):
                    host[name] = t.data
                else:  # not pinned yet, or loaded onto the device directly
                    host[name] = torch.empty_like(t, device=self.storage, pin_memory=pin).copy_(t)
            if _same(device, self.storage):
                t.data = host[name]
            else:
                t.data = host[name].to(device, non_blocking=pin)


def release(*models: nn.Module | TextEncoder | None) -> None:
    """Free models' weights for good (a one-request process, ``Pipeline.generate(release=True)``): every parameter
    and buffer becomes an empty tensor of its dtype and device; the modules can no longer run. On the CPU the freed
    memory is handed back to the system (:func:`trim_heap`), or a weight-sized hole would stay in the process."""
    for model in models:
        if model is None:
            continue
        for _, t in _tensors(_module(model)):
            t.data = torch.empty(0, dtype=t.dtype, device=t.device)
    trim_heap()


def trimming(callback: Callable[[ProgressEvent], None] | None, every: int = 1) -> Callable[[ProgressEvent], None]:
    """``callback`` (may be None), and :func:`trim_heap` after every ``every``-th decoded block: the streamed
    decode's blocks come in a few sizes per layer, and glibc serves the later ones from fresh pages while freed ones
    sit in the heap (measured on the float32 mid decode: peak RSS 821 -> 790 MB, no slower)."""
    count = 0

    def wrapped(event: ProgressEvent) -> None:
        nonlocal count
        if event.stage == "decode":
            count += 1
            if count % every == 0:
                trim_heap()
        if callback is not None:
            callback(event)

    return wrapped


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: return the heap's free pages to the system. The weights are tensors of a few MB,
    which glibc serves from its heap once its mmap threshold has grown past them, and freeing them leaves RSS as it
    was (measured: 170 MB of freed weights stayed resident). A no-op elsewhere than glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def offloads(mode: str, role: str) -> bool:
    """Whether ``mode`` keeps the model of ``role`` on the CPU between its stages."""
    return mode == "sequential" or (mode == "offload-text" and role == "text_encoder")


def _role(label: str) -> str:
    return "transformer" if label == "main" else f"transformer:{label}"


def _module(m: nn.Module | TextEncoder) -> nn.Module:
    return m if isinstance(m, nn.Module) else m.model  # a TextEncoder wraps its transformers module


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from ((f"buffer:{n}", b) for n, b in module.named_buffers() if b is not None)


def _same(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device here (torch compares them unequal)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
