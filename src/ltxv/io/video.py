"""Reading and writing video and images with PyAV (and Pillow for stills).

Every writer goes through a temporary file in the target folder that is renamed into place only when complete, so a
failure never leaves a partial output behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
OUTPUT_SUFFIXES = (".mp4", ".png", ".safetensors")


class MediaError(ValueError):
    """A media file that cannot be read (missing, corrupt, not an image or video)."""


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Float in [0, 1] -> uint8 by truncation ``(x * 255).astype(uint8)``, as the reference writes its outputs."""
    return (video.detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """(F, H, W, 3) uint8 -> H.264 yuv420p at ``fps``. yuv420p needs even sizes: an odd edge is padded by repeating
    the last row/column (the decoded frame is then one pixel larger on that edge)."""
    import av

    path = Path(path)
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with _atomic(path) as tmp:
        container = av.open(str(tmp), "w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
        finally:
            container.close()
    return path


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """(H, W, 3) float in [0, 1] (or uint8) -> PNG."""
    from PIL import Image

    path = Path(path)
    arr = image if isinstance(image, np.ndarray) else to_uint8(image)
    with _atomic(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


def save_output(
    path: str | Path, video: torch.Tensor, latents: torch.Tensor | None = None, *, fps: float = 30.0
) -> Path:
    """Write a generated video (F, H, W, 3) float in [0, 1] by suffix: ``.mp4``, ``.png`` (one frame) or
    ``.safetensors`` (the float ``video`` before uint8 and the final ``latents``, for exact comparisons)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, to_uint8(video), fps)
    if suffix == ".png":
        if video.shape[0] != 1:
            raise ValueError(f"{path}: a PNG holds one frame, the video has {video.shape[0]}; use .mp4")
        return write_png(path, video[0])
    if suffix == ".safetensors":
        tensors = {"video": video.detach().float().cpu().contiguous()}
        if latents is not None:
            tensors["latents"] = latents.detach().float().cpu().contiguous()
        with _atomic(path) as tmp:
            save_file(tensors, str(tmp))
        return path
    raise ValueError(f"{path}: unsupported output type {suffix!r} (use one of {list(OUTPUT_SUFFIXES)})")


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """-> ((F, H, W, 3) uint8, fps). Images read as one frame."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))[None], 0.0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0.0)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except Exception as e:  # PyAV / Pillow errors for corrupt or foreign files
        raise MediaError(f"{path}: not a readable image or video ({e})") from None
    if not frames:
        raise MediaError(f"{path}: the video has no frames")
    return np.stack(frames), fps
