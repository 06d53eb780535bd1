"""Writing random LoRA files in the key styles people ship, for tests and benchmarks.

``random_factors`` draws A (r, in) and B (out, r) per module (seeded by module name); ``write_lora`` writes them in one
style: ``diffusers`` (``transformer.<m>.lora_A.weight``; alpha, when it is not the rank, in diffusers' adapter
metadata), ``peft`` (no prefix), ``comfyui`` (``diffusion_model.``), ``comfyui-full`` (``model.diffusion_model.``),
``kohya`` (``<m>.lora_down.weight`` / ``lora_up`` / ``alpha`` tensor) and ``kohya-flat``
(``lora_unet_<m with _>.lora_down.weight`` ...).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

STYLES = ("diffusers", "peft", "comfyui", "comfyui-full", "kohya", "kohya-flat")
_PREFIX = {
    "diffusers": "transformer.",
    "peft": "",
    "comfyui": "diffusion_model.",
    "comfyui-full": "model.diffusion_model.",
}
# The Trainer's default targets (its LoraConfig: to_k, to_q, to_v, to_out.0, matched in attn1 and attn2) and the
# IC-LoRA config's extra feed-forward ones.
TRAINER_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
IC_LORA_TARGETS = (*TRAINER_TARGETS, "ff.net.0.proj", "ff.net.2")


@dataclass(frozen=True)
class Factors:
    down: torch.Tensor  # A (r, in)
    up: torch.Tensor  # B (out, r)
    alpha: float

    def delta(self, scale: float = 1.0) -> torch.Tensor:
        """``scale * alpha / r * B @ A`` in float64: the formula, for checking a merge."""
        return scale * self.alpha / self.down.shape[0] * (self.up.double() @ self.down.double())


def block_targets(shapes: Iterable[str], targets: Iterable[str] = TRAINER_TARGETS) -> list[str]:
    """The module names PEFT's suffix matching of ``targets`` hits among the transformer blocks' linears."""
    ends = tuple(f".{t}" for t in targets)
    return [n for n in shapes if n.startswith("transformer_blocks.") and n.endswith(ends)]


def random_factors(
    shapes: Mapping[str, tuple[int, int]],
    modules: Iterable[str],
    rank: int | Mapping[str, int],
    *,
    seed: int = 0,
    alpha: float | Mapping[str, float] | None = None,
    zero_up: bool = False,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Factors]:
    """Random factors for ``modules`` (names in ``shapes``, the transformer's linears): per-module ``rank`` and
    ``alpha`` (default: the rank), B zero with ``zero_up`` (PEFT's initialisation)."""
    out = {}
    for name in modules:
        o, i = shapes[name]
        r = rank[name] if isinstance(rank, Mapping) else rank
        a = float(r) if alpha is None else float(alpha[name] if isinstance(alpha, Mapping) else alpha)
        g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(name.encode()))
        down = (torch.randn(r, i, generator=g) / i**0.5).to(dtype)
        up = torch.zeros(o, r, dtype=dtype) if zero_up else (0.5 * torch.randn(o, r, generator=g) / r**0.5).to(dtype)
        out[name] = Factors(down, up, a)
    return out


def lora_state_dict(factors: Mapping[str, Factors], style: str, *, alpha_tensors: bool | None = None) -> dict:
    """The tensors of a LoRA file in ``style``; ``alpha_tensors``: write kohya ``.alpha`` tensors (default: for the
    kohya styles)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    kohya = style.startswith("kohya")
    alpha_tensors = kohya if alpha_tensors is None else alpha_tensors
    down, up = (".lora_down.weight", ".lora_up.weight") if kohya else (".lora_A.weight", ".lora_B.weight")
    sd: dict[str, torch.Tensor] = {}
    for name, f in factors.items():
        if style == "kohya-flat":
            stem = "lora_unet_" + name.replace(".", "_")
        else:
            stem = _PREFIX.get(style, "") + name
        sd[stem + down] = f.down.contiguous()
        sd[stem + up] = f.up.contiguous()
        if alpha_tensors:
            sd[stem + ".alpha"] = torch.tensor(f.alpha, dtype=torch.float32)
    return sd


def adapter_metadata(factors: Mapping[str, Factors]) -> dict[str, str]:
    """diffusers' ``lora_adapter_metadata`` for ``factors``: PEFT's LoraConfig (r, lora_alpha, the per-module
    patterns of the modules that differ from the most common value, the targets), keys prefixed ``transformer.``."""

    def common(values: list) -> object:
        return max(set(values), key=values.count)

    ranks = {n: f.down.shape[0] for n, f in factors.items()}
    alphas = {n: f.alpha for n, f in factors.items()}
    r, a = common(list(ranks.values())), common(list(alphas.values()))
    config = {
        "r": r,
        "lora_alpha": a,
        "rank_pattern": {f"^{n}": v for n, v in ranks.items() if v != r},
        "alpha_pattern": {f"^{n}": v for n, v in alphas.items() if v != a},
        "target_modules": sorted(factors),
    }
    return {"lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})}


def write_lora(
    path: str | Path,
    factors: Mapping[str, Factors],
    style: str = "diffusers",
    *,
    metadata: bool | None = None,
    alpha_tensors: bool | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``factors`` as a LoRA file in ``style``. ``metadata``: diffusers' adapter metadata (default: for the
    diffusers style whenever some alpha is not its module's rank)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata is None:
        metadata = style == "diffusers" and any(f.alpha != f.down.shape[0] for f in factors.values())
    meta = {"format": "pt", **(adapter_metadata(factors) if metadata else {}), **(extra_metadata or {})}
    save_file(lora_state_dict(factors, style, alpha_tensors=alpha_tensors), str(path), metadata=meta)
    return path
