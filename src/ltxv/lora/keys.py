"""The key styles LoRA files ship in, as tables: a file key -> (the linear it edits, its role).

A LoRA key is ``<prefix><module><role>``:

- prefix: ``transformer.`` (diffusers/PEFT, the Trainer's own files), ``diffusion_model.`` or
  ``model.diffusion_model.`` (ComfyUI, the Trainer's ``comfy_*`` files), none (a bare PEFT state dict), or
  ``lora_unet_`` with the module path's dots flattened to underscores (kohya);
- module: the linear's name in ltxv's transformer, which is the official checkpoint's
  (``transformer_blocks.7.attn1.to_q``), or diffusers' spelling of the few modules it names differently
  (``proj_in`` = ``patchify_proj``, ``time_embed`` = ``adaln_single``); block linears are named alike everywhere;
- role: the down factor A (r, in) (``lora_A`` / ``lora_down`` / ...), the up factor B (out, r) (``lora_B`` /
  ``lora_up`` / ...), or a kohya ``alpha`` scalar.

Layouts that are not a plain low-rank product (DoRA, LoHa, LoKr, LoCon's mid factor, full weight diffs, LoRA
biases) are refused by name: merging them as a LoRA would be silently wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["down", "up", "alpha"]

# Longest suffixes first, so ``.lora_A.default.weight`` is not read as a module named ``...lora_A.default``.
ROLE_SUFFIXES: tuple[tuple[str, Role, str], ...] = (
    (".lora_A.default.weight", "down", "lora_A/lora_B"),  # a PEFT state dict saved with its adapter name
    (".lora_B.default.weight", "up", "lora_A/lora_B"),
    (".lora_linear_layer.down.weight", "down", "lora_linear_layer"),  # diffusers' older attention-processor LoRA
    (".lora_linear_layer.up.weight", "up", "lora_linear_layer"),
    (".lora_A.weight", "down", "lora_A/lora_B"),  # PEFT, diffusers, the Trainer, ComfyUI
    (".lora_B.weight", "up", "lora_A/lora_B"),
    (".lora_down.weight", "down", "lora_down/lora_up"),  # kohya, LyCORIS
    (".lora_up.weight", "up", "lora_down/lora_up"),
    (".lora.down.weight", "down", "lora.down/lora.up"),
    (".lora.up.weight", "up", "lora.down/lora.up"),
    (".alpha", "alpha", "alpha"),  # kohya: the alpha of the module's scale alpha / rank
)
# Dotted prefixes, longest first.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.diffusion_model.", "ComfyUI"),
    ("diffusion_model.", "ComfyUI"),
    ("transformer.", "diffusers"),
)
FLAT_PREFIX = "lora_unet_"  # kohya: ``lora_unet_transformer_blocks_7_attn1_to_q.lora_down.weight``
# diffusers' names of the non-block modules that the official checkpoint (and ltxv) name differently.
DIFFUSERS_MODULES = {"proj_in": "patchify_proj", "time_embed": "adaln_single"}
# Adapter layouts that are not W + B @ A, matched on a key's last components, and what they are.
REFUSED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|[._])(dora_scale|lora_magnitude_vector)([._]|$)"), "DoRA (weight-decomposed LoRA)"),
    (re.compile(r"\.hada_(w|t)\d"), "LoHa (Hadamard-product adapter)"),
    (re.compile(r"\.lokr_(w|t)\d"), "LoKr (Kronecker-product adapter)"),
    (re.compile(r"\.lora_mid\.weight$"), "LoCon/Tucker (a mid factor)"),
    (re.compile(r"\.diff(_b)?$"), "a full weight or bias difference"),
    (re.compile(r"\.(lora_B|lora_up)(\.default)?\.bias$"), "a LoRA bias"),
)
# Prefixes of text-encoder LoRA keys: ltxv applies LoRAs to the transformer only.
TEXT_ENCODER_PREFIXES = ("text_encoder.", "lora_te_", "lora_te1_", "te.")


class LoraKeyError(ValueError):
    """A key that is not a LoRA key ltxv reads (the caller adds the file name)."""


@dataclass(frozen=True)
class ParsedKey:
    module: str  # as the file spells it, prefix and role removed (flattened for kohya's lora_unet_ keys)
    role: Role
    prefix: str  # the prefix style: "diffusers", "ComfyUI", "kohya" (lora_unet_) or "none"
    factors: str  # the role style, e.g. "lora_A/lora_B"
    flat: bool  # the module path has its dots flattened to underscores


def refused_layout(key: str) -> str | None:
    """What adapter layout ``key`` belongs to if it is one ltxv refuses, else None."""
    return next((what for pattern, what in REFUSED if pattern.search(key)), None)


def parse_key(key: str) -> ParsedKey | None:
    """Split a file key into prefix, module and role; None for a key with no LoRA role suffix."""
    match = next(((s, r, f) for s, r, f in ROLE_SUFFIXES if key.endswith(s)), None)
    if match is None:
        return None
    suffix, role, factors = match
    stem = key[: -len(suffix)]
    if stem.startswith(FLAT_PREFIX):
        return ParsedKey(stem[len(FLAT_PREFIX) :], role, "kohya", factors, flat=True)
    for prefix, style in PREFIXES:
        if stem.startswith(prefix):
            return ParsedKey(stem[len(prefix) :], role, style, factors, flat=False)
    return ParsedKey(stem, role, "none", factors, flat=False)


class ModuleTable:
    """Every spelling of every linear of a transformer -> its name there: the module's own name, diffusers' name,
    and both flattened (kohya). Built from the model's linears, so anything that names a linear of the transformer
    resolves, whichever style the file uses."""

    def __init__(self, linears: Iterable[str]) -> None:
        self.names = tuple(linears)
        dotted: dict[str, str] = {}
        for name in self.names:
            dotted[name] = name
            head, _, rest = name.partition(".")
            for theirs, ours in DIFFUSERS_MODULES.items():
                if head == ours:
                    dotted[f"{theirs}.{rest}" if rest else theirs] = name
        self.dotted = dotted
        flat: dict[str, str] = {}
        for spelling, name in dotted.items():
            key = spelling.replace(".", "_")
            if flat.get(key, name) != name:  # two modules flatten alike: such a table could not be read unambiguously
                raise ValueError(f"modules {flat[key]!r} and {name!r} both flatten to {key!r}")
            flat[key] = name
        self.flat = flat

    def resolve(self, parsed: ParsedKey) -> str | None:
        """The transformer's name of the module ``parsed`` names, or None if it names none of its linears."""
        return (self.flat if parsed.flat else self.dotted).get(parsed.module)


def text_encoder_key(key: str) -> bool:
    return key.startswith(TEXT_ENCODER_PREFIXES)
