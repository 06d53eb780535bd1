"""The communication of one sequence-parallel transformer call, in closed form (bytes sent between ranks, all ranks
together; a rank's chunk to itself is not counted). Exact for uneven splits too: the sums over ranks telescope.

With B rows (guidance branches x batch), N tokens, width D, L blocks, P ranks and ``e`` bytes per element:

* Ulysses, per block: q, k, v out (each rank sends (P-1)/P of its three (B, n_r, D) tensors) and the output back
  (the same for one tensor): ``4 B N D (P-1) / P`` elements.
* Ring, per block: each rank forwards P - 1 key/value blocks, every block but its successor's own:
  ``2 B N D (P-1)`` elements.
* The velocity all-gather, once per call: each rank sends its rows, padded to the largest split ``ceil(N / P)``,
  to the P - 1 others: ``P (P-1) B ceil(N / P) C_out`` elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CallVolume:
    attention: int  # bytes, every block's self-attention exchange
    gather: int  # bytes, the velocity all-gather

    @property
    def total(self) -> int:
        return self.attention + self.gather


def call_volume(
    *,
    rows: int,
    tokens: int,
    width: int,
    layers: int,
    out_channels: int,
    ranks: int,
    mode: str,
    element_bytes: int,
) -> CallVolume:
    """Bytes one transformer call sends between ranks under ``mode`` ("ulysses" or "ring"; module docstring)."""
    p = ranks
    if mode == "ulysses":
        per_block = 4 * rows * tokens * (width // p) * (p - 1)  # D / P: a rank's heads' channels
    elif mode == "ring":
        per_block = 2 * rows * tokens * width * (p - 1)
    else:
        raise ValueError(f"mode must be ulysses or ring, got {mode!r}")
    gather = p * (p - 1) * rows * math.ceil(tokens / p) * out_channels
    return CallVolume(attention=per_block * layers * element_bytes, gather=gather * element_bytes)
