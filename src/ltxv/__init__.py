"""ltxv: a fast, faithful engine for Lightricks' LTX-Video models.

Public entry points are imported lazily so that ``import ltxv`` stays cheap and free of side effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["LoadError", "Models", "load_models"]

if TYPE_CHECKING:  # pragma: no cover
    from ltxv.weights.errors import LoadError
    from ltxv.weights.load import Models, load_models

_LAZY = {
    "load_models": "ltxv.weights.load",
    "Models": "ltxv.weights.load",
    "LoadError": "ltxv.weights.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ltxv' has no attribute {name!r}")
