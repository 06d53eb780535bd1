"""Reading safetensors files defensively.

The header is parsed and checked by hand (8-byte little-endian length, JSON, every tensor's byte range inside the file)
before any tensor is touched, so a truncated download, an HTML error page saved as ``.safetensors`` or a pickle are
reported as such instead of failing deep inside a reader. Nothing is ever unpickled.

Tensors are read with plain positioned reads straight into their destination, one at a time, not through a memory
map: the pages of a mapped file count in the process's resident memory until it is unmapped, so reading a 6-28 GB
checkpoint through ``safe_open`` holds the whole file in RSS next to the weights made from it (and twice the weights
when they are cast). Here the transient is one tensor.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np
import torch

from ltxv.weights.errors import LoadError
from ltxv.weights.sniff import describe_file

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
    offset: int = 0  # of the tensor's first byte in the file


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
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        if len(head) < 8 or n > _MAX_HEADER or 8 + n > size:
            _refuse(path, size, n)
        raw = f.read(n)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        _refuse(path, size, n, "its header is not JSON")
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
        tensors[name] = TensorInfo(dtype, shape, 8 + n + begin)
    return SafetensorsHeader(path=path, metadata=dict(metadata), tensors=tensors)


def _refuse(path: Path, size: int, n: int, why: str | None = None) -> NoReturn:
    """The error for a file that is not a readable safetensors file, naming what it is where its bytes say."""
    what = describe_file(path)
    if what is not None and what != "a safetensors file":
        raise LoadError(
            f"{path}: this is {what}, not a safetensors file (ltxv loads safetensors only; it never unpickles)"
        )
    if why is None:
        why = f"only {size} bytes" if size < 8 else f"header length {n}, file size {size}"
        raise LoadError(f"{path}: not a safetensors file, or truncated ({why})")
    raise LoadError(f"{path}: not a safetensors file ({why})")


def iter_tensors(
    header: SafetensorsHeader, names: Mapping[str, str], dtypes: Mapping[str, torch.dtype] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(wanted name, tensor)`` for the file tensors ``names`` maps (file name -> wanted name), one at a time,
    on the CPU, each read into a fresh tensor (module docstring). ``dtypes`` (wanted name -> dtype) casts on the way:
    such a tensor is read into one scratch buffer reused for every cast, so freed full-size temporaries never pile
    up in the allocator. The data is little-endian, as the format and the machines are."""
    dtypes = dtypes or {}
    cast = {t: dtypes[t] for n, t in names.items() if t in dtypes and dtypes[t] != header.tensors[n].dtype}
    largest = max((_nbytes(header.tensors[n]) for n, t in names.items() if t in cast), default=0)
    scratch = torch.empty(largest, dtype=torch.uint8)
    try:
        with header.path.open("rb", buffering=0) as f:
            for name, target in names.items():
                info = header.tensors[name]
                if target in cast:
                    raw = scratch[: _nbytes(info)]
                    _read_into(f, info, raw.numpy(), name)
                    yield target, raw.view(info.dtype).view(info.shape).to(cast[target])
                else:
                    t = torch.empty(info.shape, dtype=info.dtype)
                    _read_into(f, info, t.reshape(-1).view(torch.uint8).numpy(), name)  # the tensor's own bytes
                    yield target, t
    except OSError as e:  # the header was valid, so this is a file changed under us or I/O trouble
        raise LoadError(f"{header.path}: could not read tensor data: {e}") from e


def _nbytes(info: TensorInfo) -> int:
    return math.prod(info.shape) * info.dtype.itemsize


def _read_into(f: BinaryIO, info: TensorInfo, buf: np.ndarray, name: str) -> None:
    f.seek(info.offset)
    got = 0
    while got < buf.nbytes:
        n = f.readinto(memoryview(buf)[got:])
        if not n:
            raise OSError(f"tensor {name!r}: the file ended after {got} of {buf.nbytes} bytes")
        got += n


_NAMES = {v: k for k, v in _DTYPES.items()}


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write CPU tensors as a safetensors file, each straight from its own memory (``safetensors.torch.save_file``
    first builds the whole file's bytes in memory: a second copy of a video-sized tensor). The header is padded to a
    multiple of 8 bytes, as the reference writer does."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors.values():
            f.write(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
