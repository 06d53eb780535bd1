"""Merging sets of LoRAs into a transformer's weights, and switching between sets without reloading the base.

A LoRA is a weight edit: for every linear a set touches, ``W' = W + sum_i scale_i * (alpha_i / r_i) * B_i @ A_i``,
computed in float32 from the *base* weight and rounded once to the weight's dtype, so a merged model costs nothing per
step. fp8 linears (:class:`~ltxv.quant.fp8.Fp8Linear`) are dequantised, merged in float32 and quantised again
(per-tensor absmax, the layer becomes a scaled one).

Switching: :class:`LoraMerger` keeps, on the host, the base weight of every linear any applied set has touched (the
first time it is touched) and the parsed factors of recently used files (by path, size and mtime). ``apply(new)``
rewrites only the linears the old or the new set touches: each from its base copy plus the new set's updates, so
switching never accumulates rounding, and a linear the new set leaves alone (or updates by exactly zero: a scale of 0,
or a factor that is all zeros, as PEFT initialises B) gets its base weight back bit for bit. ``apply([])`` restores the base model exactly.

Weights are written in place (``copy_``) wherever they live, so parameter identities hold (``torch.compile`` and
the residency policy's host copies see the change) and nothing else needs to know. Cost: host memory for the base
copies of the touched linears (for a LoRA on every attention linear of the 2B model, about 1.9 GB in bf16).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltxv.lora.file import LoraError, LoraFactors, LoraFile, linear_shapes, read_lora
from ltxv.quant.fp8 import Fp8Linear, quantize_fp8

log = logging.getLogger(__name__)

LoraSpec = tuple[str | Path, float]  # (file, scale)


@dataclass(frozen=True)
class _Base:
    """A linear's weight before any LoRA: the tensor (on the host), and for an fp8 layer its scale and kind."""

    weight: torch.Tensor
    scale: torch.Tensor | None = None
    scaled: bool = False


def _host_copy(t: torch.Tensor) -> torch.Tensor:
    pin = t.device.type == "cuda"
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=pin).copy_(t.detach())


class LoraMerger:
    """Applies LoRA sets to ``model`` (module docstring). Not thread-safe: switch between generations, not during."""

    def __init__(self, model: nn.Module, *, cache_files: int = 4) -> None:
        self.model = model
        self.shapes = linear_shapes(model)
        self._modules = dict(model.named_modules())
        self._base: dict[str, _Base] = {}
        self._files: OrderedDict[tuple[str, int, int], LoraFile] = OrderedDict()
        self._cache_files = cache_files
        self._active: tuple[tuple[tuple[str, int, int], float], ...] | None = ()  # None: half-written
        self._touched: frozenset[str] = frozenset()

    @property
    def active(self) -> tuple[tuple[Path, float], ...]:
        """The applied set: (resolved file, scale) in the order given."""
        return tuple((Path(key[0]), scale) for key, scale in self._active or ())

    def read(self, path: str | Path) -> LoraFile:
        """The parsed, checked file (cached: a file read before and unchanged since is not read again)."""
        key = _file_key(path)
        if key in self._files:
            self._files.move_to_end(key)
            return self._files[key]
        lora = read_lora(path, self.shapes)
        log.info("LoRA %s", lora.describe())
        self._files[key] = lora
        while len(self._files) > self._cache_files:
            self._files.popitem(last=False)
        return lora

    def check(self, loras: Sequence[LoraSpec]) -> None:
        """Read and check every file of a set without touching the weights (errors before any work is done)."""
        for path, scale in loras:
            _check_scale(path, scale)
            self.read(path)

    @torch.no_grad()
    def apply(self, loras: Sequence[LoraSpec]) -> None:
        """Make the model's weights the base plus exactly ``loras`` (module docstring). A no-op when the same files
        (unchanged on disk) with the same scales are applied already."""
        entries = []
        for path, scale in loras:
            _check_scale(path, scale)
            entries.append((_file_key(path), float(scale)))
        wanted = tuple(entries)
        if wanted == self._active:
            return
        updates: dict[str, list[tuple[LoraFactors, float]]] = {}
        for (path, _, _), scale in wanted:
            lora = self.read(path)
            if scale == 0.0:  # no update; the file is still read and checked
                continue
            for name, factors in lora.modules.items():
                updates.setdefault(name, []).append((factors, scale))
        # Until every write is done the model is neither set: a failure midway makes the next apply rewrite all.
        self._touched, self._active = self._touched | set(updates), None
        for name in sorted(self._touched):
            self._write(name, updates.get(name, []))
        self._touched = frozenset(updates)
        self._active = wanted

    def _write(self, name: str, updates: list[tuple[LoraFactors, float]]) -> None:
        module = self._modules[name]
        updates = [(f, s) for f, s in updates if not f.zero]
        if not updates:  # nothing, or only exactly zero updates: the base weight, bit for bit (fp8 too)
            self._restore(name)
            return
        if name not in self._base:
            w = module.weight
            if isinstance(module, Fp8Linear):
                self._base[name] = _Base(_host_copy(w), _host_copy(module.weight_scale), module.scaled)
            else:
                self._base[name] = _Base(_host_copy(w))
        base = self._base[name]
        device = module.weight.device
        if isinstance(module, Fp8Linear):  # the scale depends on the whole merged weight: merge it whole
            w = base.weight.to(device=device, dtype=torch.float32)  # a fresh tensor: fp8 -> float32
            if base.scaled:
                w.mul_(base.scale.to(device))  # type: ignore[union-attr]
            q, s = quantize_fp8(_merged(w, updates))
            module.weight.copy_(q)
            module.weight_scale.copy_(s)
            module.scaled = True
            return
        if _one_bf16_gemm(module.weight, updates):
            # bf16 weight, one bf16 LoRA, on a CPU: one bf16 GEMM whose accumulation and sum with W run in float32
            # (oneDNN), rounded once: the float32 path's result but for 1 ulp in ~1e-4 of the elements (summation
            # order), without its float32 copies of the weight; 4-5x faster on a 2-core CPU.
            factors, scale = updates[0]
            torch.addmm(base.weight, factors.up, factors.down, alpha=scale * factors.multiplier, out=module.weight)
            return
        w = base.weight.to(device=device, dtype=torch.float32, copy=True)  # a fresh copy: never the base copy itself
        module.weight.copy_(_merged(w, updates))  # one rounding to the weight's dtype

    def _restore(self, name: str) -> None:
        base = self._base.get(name)
        if base is None:  # never touched: still the base
            return
        module = self._modules[name]
        module.weight.copy_(base.weight)
        if isinstance(module, Fp8Linear):
            module.weight_scale.copy_(base.scale)  # type: ignore[arg-type]
            module.scaled = base.scaled


def _one_bf16_gemm(weight: torch.Tensor, updates: list[tuple[LoraFactors, float]]) -> bool:
    bf16 = torch.bfloat16
    return (
        weight.device.type == "cpu"
        and weight.dtype == bf16
        and len(updates) == 1
        and updates[0][0].up.dtype == updates[0][0].down.dtype == bf16
    )


def _merged(w: torch.Tensor, updates: list[tuple[LoraFactors, float]]) -> torch.Tensor:
    """``w`` (a weight in float32, updated in place) + sum_i scale_i (alpha_i / r_i) B_i @ A_i, each a fused
    matmul-add in float32. (Row blocks that keep the sum in cache were slower on a busy 2-core CPU: more, smaller
    kernels, each a thread barrier.)"""
    for factors, scale in updates:
        factors.add_to(w, scale)
    return w


def _check_scale(path: str | Path, scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale != scale or abs(scale) == float("inf"):
        raise LoraError(f"{path}: LoRA scale must be a finite number, got {scale!r}")


def _file_key(path: str | Path) -> tuple[str, int, int]:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise LoraError(f"{p}: no such file") from None
    return str(p.resolve()), st.st_size, st.st_mtime_ns
