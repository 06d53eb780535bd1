"""Checking an output destination before anything is generated: the kind of file, the folder it goes in (it, or
the nearest folder above it that exists, is a folder one can write in), the space left there for the estimated file,
and the H.264 encoder's limits for an mp4. Nothing is created: the folders a write needs are made by the writer."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ltxv.io.video import OUTPUT_SUFFIXES, OutputError, check_mp4_encoder

# An H.264 CRF 25 file of the random tiny model's output measured 20% of its raw yuv420p size (noise compresses
# worst); real footage is a few percent. The space check asks for a quarter of the raw size.
MP4_SIZE_FRACTION = 0.25


def output_bytes(path: str | Path, num_frames: int, height: int, width: int, latents: int = 0) -> int:
    """About how large the output file will be: exact for .safetensors (float32 video + ``latents`` bytes), the raw
    RGB size for a .png, :data:`MP4_SIZE_FRACTION` of the raw yuv420p size for an .mp4."""
    suffix = Path(path).suffix.lower()
    pixels = num_frames * height * width
    if suffix == ".safetensors":
        return pixels * 3 * 4 + latents + 1024
    if suffix == ".png":
        return pixels * 3 + 1024
    return int(pixels * 1.5 * MP4_SIZE_FRACTION) + 4096


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_output(
    path: str | Path,
    *,
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    latents: int = 0,
    overwrite: bool = False,
) -> Path:
    """Check that a ``num_frames`` x ``height`` x ``width`` video at ``fps`` can be written to ``path``; raise
    :class:`OutputError` (``param="output"``) naming the path and the problem. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise OutputError(f"{path}: the output must end in .mp4, .safetensors or .png (one frame)", param="output")
    if suffix == ".png" and num_frames != 1:
        raise OutputError(f"{path}: a .png holds one frame, the video has {num_frames}; use .mp4", param="output")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name (e.g. {path / 'video.mp4'})", param="output")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: the file exists (give another name, or --overwrite to replace it)", param="output")
    folder = _existing_folder(path.parent, path)
    _check_writable(folder, path)
    need = output_bytes(path, num_frames, height, width, latents)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OutputError(f"{path}: {_gib(free)} free in {folder}, the output needs about {_gib(need)}", param="output")
    if suffix == ".mp4":
        if height % 2 or width % 2:
            even = f"{height - height % 2} or {height + height % 2}" if height % 2 else f"{width - 1} or {width + 1}"
            side = "height" if height % 2 else "width"
            raise OutputError(
                f"{path}: an .mp4 (H.264 yuv420p) needs an even height and width, got {width}x{height}; "
                f"ask for a {side} of {even}, or write .safetensors",
                param=side,
            )
        check_mp4_encoder(height, width, fps)
    return path


def _existing_folder(folder: Path, path: Path) -> Path:
    """``folder``, or the nearest folder above it that exists; an error if that is a file."""
    found = next((p for p in (folder, *folder.parents) if p.exists()), Path(folder.anchor or "."))
    if not found.is_dir():
        raise OutputError(f"{path}: {found} is a file, not a folder", param="output")
    return found


def check_folder(folder: str | Path) -> Path:
    """A folder that is, or can be made, and written in (``ltxv demo``'s and ``make-tiny``'s destinations)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder", param="output")
    _check_writable(_existing_folder(folder, folder), folder)
    return folder


def _check_writable(folder: Path, path: Path) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root, read-only mounts and
    quotas (``os.access`` answers for the permission bits only)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".ltxv-write-test-", dir=folder)
    except OSError as e:
        raise OutputError(f"{path}: cannot write in {folder} ({e.strerror or e})", param="output") from None
    os.close(fd)
    os.unlink(probe)
