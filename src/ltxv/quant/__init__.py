"""Quantised layers swapped into the model: fp8 weights for the transformer blocks' linears."""

from __future__ import annotations

from ltxv.quant.fp8 import (
    FP8,
    Fp8Linear,
    fp8_linear_names,
    is_fp8_linear_name,
    module_bytes,
    quantize_,
    quantize_fp8,
    swap_to_fp8,
)

__all__ = [
    "FP8",
    "Fp8Linear",
    "fp8_linear_names",
    "is_fp8_linear_name",
    "module_bytes",
    "quantize_",
    "quantize_fp8",
    "swap_to_fp8",
]
