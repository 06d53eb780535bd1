"""Reading a LoRA file: safetensors only, every key accounted for, checked against the transformer it is for.

What a file says, per linear of the transformer: the factors A (r, in) and B (out, r) and the alpha of its scale
``alpha / r``. Alpha comes, most specific first, from a kohya ``<module>.alpha`` tensor, from diffusers' adapter
metadata (``__metadata__["lora_adapter_metadata"]``: PEFT's ``LoraConfig`` as JSON, its keys prefixed
``transformer.``; ``alpha_pattern`` per module, else ``lora_alpha``), else it is the rank (scale 1: what PEFT, diffusers
and ComfyUI assume when a file says nothing; the Trainer writes no alpha). PEFT's rsLoRA (``use_rslora``) scales by
``alpha / sqrt(r)``. The rank is read per module from the shapes.

Strict, as the checkpoint loader: a key that names no linear of the transformer, a factor whose shape does not fit
its linear, half a pair, an adapter layout that is not a plain low-rank product, and a file without any LoRA key are
errors naming the file and the key, never a silent no-op.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltxv.lora.keys import ModuleTable, ParsedKey, parse_key, refused_layout, text_encoder_key
from ltxv.quant.fp8 import Fp8Linear
from ltxv.weights.errors import LoadError
from ltxv.weights.safetensors_file import iter_tensors, read_header

METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
METADATA_PREFIX = "transformer."  # diffusers packs each component's config under its name
# LTX-2 IC-LoRA metadata: references at a reduced resolution. 0.9.x references are full size (factor 1).
DOWNSCALE_KEY = "reference_downscale_factor"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class LoraError(LoadError):
    """A LoRA file that cannot be applied: not safetensors, a key or shape that does not fit the transformer, an
    unsupported adapter layout, or no LoRA keys at all."""


@dataclass(frozen=True)
class LoraFactors:
    """One linear's low-rank update ``(alpha / r) * B @ A`` (``alpha / sqrt(r)`` for rsLoRA), factors as stored."""

    down: torch.Tensor  # A (r, in)
    up: torch.Tensor  # B (out, r)
    alpha: float
    rslora: bool = False
    zero: bool = False  # A or B is all zeros (B is, as PEFT initialises it): the update is exactly 0

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def multiplier(self) -> float:
        """alpha / r (alpha / sqrt(r) for rsLoRA): what B @ A is multiplied by at scale 1."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def add_to(self, w: torch.Tensor, scale: float) -> torch.Tensor:
        """``w += scale * multiplier * B @ A`` in place, w (out, in) float32 (one fused matmul-add, in w's device)."""
        up = self.up.to(device=w.device, dtype=torch.float32)
        down = self.down.to(device=w.device, dtype=torch.float32)
        return w.addmm_(up, down, alpha=scale * self.multiplier)

    def delta(self, scale: float, device: torch.device | str | None = None) -> torch.Tensor:
        """``scale * multiplier * B @ A`` (out, in) in float32, on ``device``."""
        return self.add_to(torch.zeros(self.up.shape[0], self.down.shape[1], device=device), scale)


@dataclass(frozen=True)
class LoraFile:
    path: Path
    modules: dict[str, LoraFactors]  # the transformer's module name -> factors
    styles: tuple[str, ...]  # the key styles found, e.g. "diffusers prefix, lora_A/lora_B"

    def describe(self) -> str:
        ranks = sorted({f.rank for f in self.modules.values()})
        rank = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
        return f"{self.path.name}: {len(self.modules)} linears, rank {rank} ({'; '.join(self.styles)})"

    def nbytes(self) -> int:
        return sum(f.down.nbytes + f.up.nbytes for f in self.modules.values())


def linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every linear a LoRA can edit: module name -> (out_features, in_features); fp8 linears included."""
    return {
        name: (m.out_features, m.in_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | Fp8Linear)
    }


@dataclass(frozen=True)
class _AdapterConfig:
    """The parts of PEFT's LoraConfig that set a module's scale."""

    r: int | None = None
    lora_alpha: float | None = None
    rank_pattern: Mapping[str, int] | None = None
    alpha_pattern: Mapping[str, float] | None = None
    rslora: bool = False

    @staticmethod
    def pattern_value(patterns: Mapping[str, object] | None, module: str) -> object | None:
        """PEFT's ``get_pattern_key``: the first pattern ``p`` with ``(.*\\.)?(p)$`` matching the module name."""
        for pattern, value in (patterns or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                return value
        return None


def _adapter_config(path: Path, metadata: Mapping[str, str]) -> _AdapterConfig | None:
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        raise LoraError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise LoraError(f"{path}: metadata {METADATA_KEY!r} is not a JSON object")
    own = {k[len(METADATA_PREFIX) :]: v for k, v in doc.items() if k.startswith(METADATA_PREFIX)}
    cfg = own or doc  # a bare PEFT config has no component prefix
    if cfg.get("use_dora"):
        raise LoraError(f"{path}: a DoRA adapter (use_dora in its metadata); ltxv merges plain LoRAs only")

    def number(key: str, kind: type) -> object | None:
        v = cfg.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not float(v).is_integer()):
            raise LoraError(f"{path}: metadata {METADATA_KEY}.{key} must be a number, got {v!r}")
        return kind(v)

    patterns = {}
    for key in ("rank_pattern", "alpha_pattern"):
        v = cfg.get(key) or {}
        if not isinstance(v, dict) or not all(isinstance(x, int | float) for x in v.values()):
            raise LoraError(f"{path}: metadata {METADATA_KEY}.{key} must map module patterns to numbers, got {v!r}")
        patterns[key] = v
    return _AdapterConfig(
        r=number("r", int),  # type: ignore[arg-type]
        lora_alpha=number("lora_alpha", float),  # type: ignore[arg-type]
        rank_pattern=patterns["rank_pattern"],
        alpha_pattern=patterns["alpha_pattern"],
        rslora=bool(cfg.get("use_rslora", False)),
    )


def _check_downscale(path: Path, metadata: Mapping[str, str]) -> None:
    raw = metadata.get(DOWNSCALE_KEY)
    if raw is None:
        return
    try:
        factor = float(raw)
    except ValueError:
        raise LoraError(f"{path}: metadata {DOWNSCALE_KEY}={raw!r} is not a number") from None
    if factor != 1.0:
        raise LoraError(
            f"{path}: an IC-LoRA for references at 1/{factor:g} resolution ({DOWNSCALE_KEY}={raw}; LTX-2 metadata); "
            "LTX-Video 0.9.x IC-LoRAs read full-resolution references"
        )


def read_lora(path: str | Path, linears: Mapping[str, tuple[int, int]], *, load: bool = True) -> LoraFile:
    """Read and check a LoRA file against a transformer's linears (:func:`linear_shapes`). Factors stay on the CPU in
    the file's dtype. Raises :class:`LoraError` naming the file and the offending key. ``load=False`` checks
    everything from the header (and the small alpha tensors) and returns factors on the meta device."""
    path = Path(path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise LoraError(f"{path}: only safetensors LoRA files are read (a {path.suffix} file would be unpickled)")
    try:
        header = read_header(path)
    except LoadError as e:  # not there, not safetensors, truncated: the same message, as a LoRA error
        raise LoraError(str(e)) from None
    _check_downscale(path, header.metadata)
    config = _adapter_config(path, header.metadata)
    table = ModuleTable(linears)
    parsed: dict[str, tuple[str, ParsedKey]] = {}  # file key -> (module, parsed)
    other: list[str] = []
    for key in header.tensors:
        layout = refused_layout(key)
        if layout is not None:
            raise LoraError(f"{path}: key {key!r} belongs to {layout}; ltxv merges plain LoRAs (W + B @ A) only")
        p = parse_key(key)
        if p is None:
            other.append(key)
            continue
        if text_encoder_key(key):
            raise LoraError(f"{path}: key {key!r} is a text-encoder LoRA; ltxv applies LoRAs to the transformer only")
        module = table.resolve(p)
        if module is None:
            raise LoraError(f"{path}: key {key!r} names no linear of the transformer (module {p.module!r})")
        parsed[key] = (module, p)
    if not parsed:
        sample = ", ".join(repr(k) for k in list(header.tensors)[:3]) or "none"
        raise LoraError(
            f"{path}: no LoRA keys (lora_A/lora_B, lora_down/lora_up, ...) among its {len(header.tensors)} tensors "
            f"(e.g. {sample}); is it a LoRA file?"
        )
    if other:
        raise LoraError(f"{path}: key {other[0]!r} is not a LoRA key ltxv reads ({len(other)} such key(s))")
    roles: dict[str, dict[str, str]] = {}  # module -> role -> file key
    styles: set[str] = set()
    for key, (module, p) in parsed.items():
        seen = roles.setdefault(module, {})
        if p.role in seen:
            raise LoraError(f"{path}: keys {seen[p.role]!r} and {key!r} are both the {p.role} factor of {module}")
        seen[p.role] = key
        if p.role != "alpha":
            styles.add(f"{p.prefix} prefix, {p.factors}")
    for module, r in roles.items():
        for need in ("down", "up"):
            if need not in r:
                have = next(iter(r.values()))
                raise LoraError(f"{path}: key {have!r} has no matching {need} factor for {module}")
    wanted = {k: k for k, (_, p) in parsed.items() if load or p.role == "alpha"}
    tensors = dict(iter_tensors(header, wanted))
    for k in parsed.keys() - wanted.keys():
        info = header.tensors[k]
        tensors[k] = torch.empty(info.shape, dtype=info.dtype, device="meta")
    modules = {}
    for module, r in roles.items():
        modules[module] = _factors(path, module, r, tensors, linears[module], config, parsed[r["down"]][1].module)
    return LoraFile(path, modules, tuple(sorted(styles)))


def _factors(
    path: Path,
    module: str,
    keys: Mapping[str, str],
    tensors: Mapping[str, torch.Tensor],
    shape: tuple[int, int],
    config: _AdapterConfig | None,
    file_module: str,
) -> LoraFactors:
    down, up = tensors[keys["down"]], tensors[keys["up"]]
    out_features, in_features = shape
    for key, t in ((keys["down"], down), (keys["up"], up)):
        if not t.dtype.is_floating_point:
            raise LoraError(f"{path}: key {key!r} is {t.dtype}, not a floating-point tensor")
        if t.ndim != 2:
            raise LoraError(f"{path}: key {key!r} is {list(t.shape)}, not a matrix")
    rank = down.shape[0]
    if down.shape[1] != in_features or rank == 0:
        raise LoraError(
            f"{path}: key {keys['down']!r} is {list(down.shape)}, but {module} takes {in_features} inputs "
            f"(expected [rank, {in_features}])"
        )
    if tuple(up.shape) != (out_features, rank):
        raise LoraError(
            f"{path}: key {keys['up']!r} is {list(up.shape)}, expected [{out_features}, {rank}] "
            f"({module} has {out_features} outputs; the down factor has rank {rank})"
        )
    alpha: float | None = None
    if "alpha" in keys:
        a = tensors[keys["alpha"]]
        if a.numel() != 1 or a.dtype.is_complex or a.dtype == torch.bool:
            raise LoraError(f"{path}: key {keys['alpha']!r} is {list(a.shape)}, expected one number")
        alpha = float(a.reshape(()).item())
    rslora = False
    if config is not None:
        r = config.pattern_value(config.rank_pattern, file_module) or config.r
        if r is not None and int(r) != rank:  # type: ignore[call-overload]
            raise LoraError(
                f"{path}: key {keys['down']!r} has rank {rank}, but the file's {METADATA_KEY} says r={r} for {module}"
            )
        if alpha is None:
            pattern_alpha = config.pattern_value(config.alpha_pattern, file_module)
            alpha = float(pattern_alpha) if pattern_alpha is not None else config.lora_alpha  # type: ignore[arg-type]
        rslora = config.rslora
    if alpha is None:
        alpha = float(rank)
    if not math.isfinite(alpha):
        raise LoraError(f"{path}: the alpha of {module} is {alpha}")
    zero = not down.is_meta and not (bool(down.any()) and bool(up.any()))
    return LoraFactors(down=down, up=up, alpha=alpha, rslora=rslora, zero=zero)
