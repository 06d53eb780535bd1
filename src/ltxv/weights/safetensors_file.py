"""Reading safetensors files defensively.

The header is parsed and checked by hand (8-byte little-endian length, JSON, every tensor's byte range inside the file)
before any tensor is touched, so a truncated download, an HTML error page saved as ``.safetensors`` or a pickle are
reported as such instead of failing deep inside a reader. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ltxv.weights.errors import LoadError

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
FLOAT8_DTYPES = frozenset(t for t in _DTYPES.values() if t.itemsize == 1 and t.is_floating_point)
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and validate a safetensors header; raise :class:`LoadError` naming the file on any problem."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path}: no such file")
    if not path.is_file():
        raise LoadError(f"{path}: not a file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LoadError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise LoadError(f"{path}: looks like a pickled/zip torch checkpoint; only safetensors files are loaded")
            raise LoadError(f"{path}: not a safetensors file, or truncated (header length {n}, file size {size})")
        raw = f.read(n)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoadError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(doc, dict):
        raise LoadError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, info in doc.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise LoadError(f"{path}: malformed header entry for tensor {name!r}") from None
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or begin < 0:
            raise LoadError(f"{path}: malformed header entry for tensor {name!r} (byte range does not match shape)")
        if end > data_size:
            raise LoadError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {end} but the file holds {data_size} data bytes"
            )
        tensors[name] = TensorInfo(dtype, shape)
    return SafetensorsHeader(path=path, metadata=dict(metadata), tensors=tensors)


def iter_tensors(header: SafetensorsHeader, names: Mapping[str, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(wanted name, tensor as stored)`` for the file tensors ``names`` maps, one at a time, on the CPU."""
    try:
        with safe_open(str(header.path), framework="pt", device="cpu") as f:
            for name, target in names.items():
                t = f.get_tensor(name)
                yield target, t
    except Exception as e:  # the header was valid, so this is corruption inside the data or I/O trouble
        raise LoadError(f"{header.path}: could not read tensor data: {e}") from e


def cast_floating(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``t`` in ``dtype`` if it is a floating-point tensor that is not float8; anything else as it is (fp8 weights
    are quantised state, not a storage precision to convert)."""
    if dtype is None or not t.is_floating_point() or t.dtype in FLOAT8_DTYPES or t.dtype == dtype:
        return t
    return t.to(dtype)


def read_tensors(
    header: SafetensorsHeader, names: Mapping[str, str], dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Read the tensors ``names`` maps from file name to wanted name, on the CPU; floating-point tensors other than
    float8 ones are cast to ``dtype`` one at a time as they are read, so the peak stays one tensor above the result."""
    return {target: cast_floating(t, dtype) for target, t in iter_tensors(header, names)}
