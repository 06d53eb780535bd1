"""The one error type of checkpoint loading: every problem with a weights file is reported as a LoadError naming the
file and what is wrong with it."""

from __future__ import annotations

from ltxv.errors import LtxvError


class LoadError(LtxvError):
    """A checkpoint file that cannot be loaded: missing, not safetensors, truncated, wrong keys or shapes, no config."""

    code = "model"
