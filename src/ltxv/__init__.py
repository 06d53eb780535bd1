"""ltxv: a fast, faithful engine for Lightricks' LTX-Video models.

Public entry points are imported lazily so that ``import ltxv`` stays cheap and free of side effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["GenerationRequest", "LoadError", "LtxvError", "Models", "load", "load_models"]

if TYPE_CHECKING:  # pragma: no cover
    from ltxv.errors import LtxvError
    from ltxv.pipelines.generate import load_pipeline as load
    from ltxv.pipelines.request import GenerationRequest
    from ltxv.weights.errors import LoadError
    from ltxv.weights.load import Models, load_models

_LAZY = {
    "load": ("ltxv.pipelines.generate", "load_pipeline"),
    "GenerationRequest": ("ltxv.pipelines.request", "GenerationRequest"),
    "load_models": ("ltxv.weights.load", "load_models"),
    "Models": ("ltxv.weights.load", "Models"),
    "LoadError": ("ltxv.weights.errors", "LoadError"),
    "LtxvError": ("ltxv.errors", "LtxvError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ltxv' has no attribute {name!r}")
