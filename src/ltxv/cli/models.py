"""From model flags to a checked preflight and a loaded pipeline: the one path every command that runs models takes
(``generate``, ``demo``, and the service's commands).

The offline default lives here: :data:`OFFLINE_PRESET` is the demo model shipped with ltxv (issue 9). When the
default preset's weights are neither cached nor downloadable, the error says to use it (or local files)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltxv.cli.flags import MODELS
from ltxv.pipelines.presets import DEFAULT_PRESET, PRESETS, load_recipe, pipeline_args
from ltxv.pipelines.request import Recipe
from ltxv.runtime.devices import check_device
from ltxv.weights.errors import LoadError

if TYPE_CHECKING:
    from ltxv.pipelines.generate import Pipeline
    from ltxv.pipelines.preflight import Preflight

OFFLINE_PRESET = "ltxv-demo"


def recipe_of(a: argparse.Namespace) -> Recipe:
    return load_recipe(a.preset or a.pipeline_config or DEFAULT_PRESET)


def offline_hint() -> str:
    """What to do without the network: the shipped demo model, or local files."""
    local = "give local files (--checkpoint FILE --upsampler FILE --text-encoder DIR; `ltxv make-tiny DIR` writes a random test set)"
    if OFFLINE_PRESET in PRESETS:
        return f"offline, use the demo model shipped with ltxv (--preset {OFFLINE_PRESET}), or {local}"
    return f"offline, run `ltxv demo` (a tiny random model), or {local}"


def quiet_transformers() -> None:
    """transformers' own progress bars and advice are noise on a terminal the command draws its own bars on."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@dataclass
class ModelChoice:
    """The models the flags name (a recipe's files, each overridable) and how to run them."""

    recipe: Recipe
    args: dict[str, Any]  # load_pipeline's checkpoint, upsampler, text_encoder, dtype, device
    residency: str
    quantize: str | None
    compile: bool
    max_memory: int | None
    hybrid: tuple[str, ...] = ()  # further checkpoints whose transformers join the pipeline, [LABEL=]PATH each

    @classmethod
    def from_args(cls, a: argparse.Namespace, recipe: Recipe | None = None) -> ModelChoice:
        recipe = recipe or recipe_of(a)
        device = str(check_device(a.device))
        args = pipeline_args(recipe, **{k: getattr(a, k) for k in MODELS}, dtype=a.dtype, device=device)
        residency = a.residency or ("offload-text" if getattr(a, "offload_to_cpu", False) else "resident")
        return cls(recipe, args, residency, a.quantize, a.compile, a.max_memory, tuple(a.hybrid or ()))

    def preflight(self) -> Preflight:
        """The models' files resolved and checked from their headers (no weights read)."""
        from ltxv.pipelines.preflight import Preflight

        a = self.args
        try:
            return Preflight.from_files(
                a["checkpoint"],
                a["upsampler"],
                a["text_encoder"],
                dtype=a["dtype"],
                device=a["device"],
                residency=self.residency,
                quantize=self.quantize,
                max_memory=self.max_memory,
                hybrid=self.hybrid,
            )
        except LoadError as e:
            if "could not be downloaded" in str(e):
                raise LoadError(f"{e}; {offline_hint()}", param=e.param) from None
            raise

    def load(self, checked: Preflight, group: Any = None) -> Pipeline:
        """``group``: a process group to split every request over (a rank of ``ltxv generate --parallel``)."""
        from ltxv.pipelines.generate import load_checked

        quiet_transformers()
        return load_checked(checked, compile=self.compile, group=group)


def created_paths(paths: list[Path]) -> list[Path]:
    """Of ``paths``, those that do not exist yet (what a failed command must remove)."""
    return [p for p in paths if not p.exists()]
