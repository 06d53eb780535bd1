"""Which compute devices this machine has and how much memory they have free, asked when a run is checked (never at
import time). Errors name the device as it was asked for."""

from __future__ import annotations

from pathlib import Path

import torch

from ltxv.errors import LtxvError

KNOWN = ("cpu", "cuda", "mps", "xpu")


class DeviceError(LtxvError):
    """A device that does not exist here (unknown kind, no such index, not built into this torch)."""

    code = "device"


def default_device() -> str:
    """The CLI's and the API's default: the first CUDA device if there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device | None) -> torch.device:
    """``device`` parsed and checked to exist (None: :func:`default_device`); :class:`DeviceError` otherwise."""
    if device is None:
        device = default_device()
    if not isinstance(device, str | torch.device):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}", param="device")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(
            f"device {str(device)!r} is not a device torch knows (use cpu, cuda, cuda:N, mps or xpu)", param="device"
        ) from None
    if dev.type not in KNOWN:
        raise DeviceError(f"device {str(device)!r}: ltxv runs on {', '.join(KNOWN)}, not {dev.type}", param="device")
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise DeviceError(f"device {str(device)!r}: there is one CPU device, 'cpu'", param="device")
        return dev
    backend = getattr(torch, dev.type) if dev.type != "mps" else torch.backends.mps
    if not backend.is_available():
        built = {"cuda": torch.backends.cuda.is_built(), "mps": torch.backends.mps.is_built()}.get(dev.type, True)
        why = (
            f"this torch build ({torch.__version__}) has no {dev.type.upper()} support"
            if not built
            else (f"no {dev.type.upper()} device is visible to this process")
        )
        raise DeviceError(f"device {str(device)!r}: {why}", param="device")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise DeviceError(
            f"device {str(device)!r}: there {'is' if count == 1 else 'are'} {count} {dev.type} device(s) "
            f"({', '.join(f'{dev.type}:{i}' for i in range(count))})",
            param="device",
        )
    return dev


def available_memory(device: torch.device) -> int | None:
    """Bytes a run could still allocate on ``device``: on CUDA the free memory plus what torch's caching allocator
    holds unused; on the CPU the kernel's ``MemAvailable``. None where it cannot be told (mps, xpu, no /proc)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None
