"""Reading and writing video (PyAV) and images (Pillow).

Every writer writes a hidden temporary file next to the target and renames it into place only once complete, so a
failure never leaves a partial output behind (nor the folders it had to create). A video is converted to uint8 frame
by frame as it is encoded, so writing holds one frame's copy, not the whole video's."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltxv.errors import LtxvError

# The reference reads these suffixes as video and anything else as an image (inference.py ``load_media_file``).
# ltxv reads a file by what its bytes are (``ltxv.io.probe``); the suffixes only word the messages.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
OUTPUT_SUFFIXES = (".mp4", ".png", ".safetensors")
# The reference writes with imageio-ffmpeg's defaults: libx264, yuv420p, quality 5, which it passes as CRF 25.
MP4_CRF = 25


class MediaError(LtxvError):
    """A media file that cannot be read (missing, corrupt, not an image or video)."""

    code = "media"


class OutputError(LtxvError):
    """An output that cannot be written where or how it was asked (folder, space, encoder limits)."""

    code = "output"


def is_video(path: str | Path) -> bool:
    """The reference's rule, by suffix (used to word messages; reading goes by content)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")


def read_image(path: str | Path) -> torch.Tensor:
    """-> (H, W, 3) uint8, converted to RGB as the reference does (``Image.open(p).convert("RGB")``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_file(path)
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise MediaError(unreadable(path, "image", "not a format Pillow knows")) from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data of a known format
        raise MediaError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(rgb.copy())


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """-> ((F, H, W, 3) uint8, fps): the first ``max_frames`` frames (all if None), decoded to RGB by FFmpeg's
    swscale, which gives the same pixels as the reference's imageio-ffmpeg reader."""
    import av

    path = Path(path)
    check_file(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(unreadable(path, "video", _reason(e))) from None
    if not frames:
        raise MediaError(f"{path}: the video has no frames")
    return torch.from_numpy(np.stack(frames)), float(rate or 0.0)


def count_video_frames(path: str | Path) -> int:
    """The number of frames, counted from the demuxed packets without decoding (as imageio-ffmpeg's
    ``count_frames`` does with ``-c copy``)."""
    import av

    path = Path(path)
    check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            return sum(1 for p in container.demux(container.streams.video[0]) if p.size > 0)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(unreadable(path, "video", _reason(e))) from None


def _reason(e: Exception) -> str:
    # FFmpeg's errors repeat the file name; its plain description is enough after ours.
    return str(getattr(e, "strerror", None) or e)


def unreadable(path: Path, kind: str, reason: str) -> str:
    """The message for a file that is not a readable ``kind``: what the file is where its bytes say ("this is a text
    file"), else the decoder's reason."""
    from ltxv.weights.sniff import describe_file

    what = describe_file(path)
    if what and not what.endswith(("image", "video")):
        return f"{path}: not a readable {kind}: this is {what}"
    return f"{path}: not a readable {kind} ({reason})"


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` (same suffix, so writers infer the format), renamed onto ``path``
    when the block completes; if it fails, the temporary file and any folder made for it are removed. An OS error
    (no space, no permission) becomes an :class:`OutputError` naming the path."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    done = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
        done = True
    except OSError as e:
        raise OutputError(f"{path}: could not write the output ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
        if not done:
            for folder in missing:  # innermost first; only the empty ones this write made
                try:
                    folder.rmdir()
                except OSError:
                    break


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Float in [0, 1] -> uint8 by truncation, ``(x * 255).astype(uint8)`` on float32, as the reference writes its
    outputs (not rounding: a value of 0.999 gives 254). A uint8 video (``generate(video_dtype=torch.uint8)``, truncated
    the same way) is returned as it is."""
    if video.dtype == torch.uint8:
        return video.detach().cpu().numpy()
    return (video.detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)


def _frames(frames: torch.Tensor | np.ndarray, ndim: int) -> torch.Tensor | np.ndarray:
    """Check ``frames`` is uint8 RGB, or a float tensor in [0, 1] to be converted frame by frame."""
    is_float = isinstance(frames, torch.Tensor) and frames.is_floating_point()
    arr = frames if isinstance(frames, torch.Tensor) else np.asarray(frames)
    dtype = str(arr.dtype).removeprefix("torch.")
    if (dtype != "uint8" and not is_float) or arr.ndim != ndim or arr.shape[-1] != 3:
        shape = "(F, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise ValueError(
            f"expected {shape} uint8 RGB or a float tensor in [0, 1], got {dtype} of shape {tuple(arr.shape)}"
        )
    return arr


def _frame_u8(frames: torch.Tensor | np.ndarray, i: int) -> np.ndarray:
    f = frames[i]
    if isinstance(f, torch.Tensor):
        return to_uint8(f) if f.is_floating_point() else f.detach().cpu().numpy()
    return f


def mp4_rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


# libx264's CPU-specific algorithm choices made its output vary between writes of the same frames in one process
# (measured here: 3 different files in 60 writes of one clip on a busy 2-core machine, with one encoder thread or
# several; with `cpu-independent` 1 in 60, and the encode was no slower). The same frames now give the same file,
# so an mp4 from the service can equal `ltxv generate`'s byte for byte.
X264_PARAMS = "cpu-independent=1"


def _mp4_stream(container: Any, height: int, width: int, fps: float, crf: int) -> Any:
    options = {"crf": str(crf), "x264-params": X264_PARAMS}
    stream = container.add_stream("libx264", rate=mp4_rate(fps), options=options)
    stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
    return stream


def write_mp4(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float, *, crf: int = MP4_CRF) -> Path:
    """(F, H, W, 3) uint8, or a float tensor in [0, 1] (truncated to uint8 frame by frame, as :func:`to_uint8`) ->
    H.264 yuv420p MP4 at ``fps``; see :class:`Mp4Writer`."""
    arr = _frames(frames, 4)
    with Mp4Writer(path, fps, crf=crf) as writer:
        writer.write(arr)
    return Path(path)


class Mp4Writer:
    """An H.264 yuv420p MP4 written block by block, for videos that never exist whole (a long video's frames are
    written as they leave the decoder): ``with Mp4Writer(path, fps) as w: w.write(frames)``. ``write`` takes
    (n, H, W, 3) uint8, or a float tensor in [0, 1] (truncated to uint8 frame by frame, as :func:`to_uint8`). The
    file is written as :func:`_atomic` writes: a hidden temporary renamed into place when the block completes, and
    nothing left (nor a folder made for it) if it raises.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row/column, so the file is one
    pixel larger on that edge (the reference's writer instead rescales to a multiple of 16; ``ltxv generate`` refuses
    odd sizes for an mp4)."""

    def __init__(self, path: str | Path, fps: float, *, crf: int = MP4_CRF) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps, self.crf = Path(path), fps, crf
        self.frames = 0
        self._stack: ExitStack | None = None
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> Mp4Writer:
        import av

        with ExitStack() as stack:
            tmp = stack.enter_context(_atomic(self.path))
            self._container = stack.enter_context(av.open(str(tmp), "w", format="mp4"))
            self._stack = stack.pop_all()
        return self

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Append frames (n, H, W, 3), uint8 or float in [0, 1]; every block has the first block's size."""
        import av

        if self._container is None:
            raise RuntimeError("Mp4Writer.write outside its with-block")
        arr = _frames(frames, 4)
        h, w = arr.shape[1:3]
        if self._stream is None:
            self._stream, self._size = _mp4_stream(self._container, h, w, self.fps, self.crf), (h, w)
        elif (h, w) != self._size:
            raise ValueError(f"frames of {h}x{w} after frames of {self._size[0]}x{self._size[1]}")  # type: ignore[index]
        rate = mp4_rate(self.fps)
        for i in range(arr.shape[0]):
            frame = np.pad(_frame_u8(arr, i), ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts, video_frame.time_base = self.frames, 1 / rate
            self._container.mux(self._stream.encode(video_frame))
            self.frames += 1

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: Any) -> None:
        stack, container = self._stack, self._container
        self._stack, self._container = None, None
        assert stack is not None
        if kind is None:
            try:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames were written")
                container.mux(self._stream.encode())  # the encoder's delayed frames
            except BaseException as e:  # nothing is left behind for a failed flush either
                if not stack.__exit__(type(e), e, e.__traceback__):
                    raise
                return
        stack.__exit__(kind, value, tb)  # closes the file, then renames it into place or removes it


def check_mp4_encoder(height: int, width: int, fps: float, *, crf: int = MP4_CRF) -> None:
    """Open the H.264 encoder :func:`write_mp4` would use at this size and rate, in memory (milliseconds), so a size it
    refuses is known before anything is generated. Raises :class:`OutputError`."""
    import io

    import av

    try:
        with av.open(io.BytesIO(), "w", format="mp4") as container:
            _mp4_stream(container, height, width, fps, crf).codec_context.open()
    except (av.FFmpegError, OSError, ValueError) as e:
        limit = " (libx264 takes at most 16384 pixels a side)" if max(height, width) > 16384 else ""
        raise OutputError(
            f"the H.264 encoder (libx264) refuses a {width}x{height} video at {float(fps):g} fps{limit}: "
            f"{_reason(e)}; write .safetensors (or .png for one frame) instead",
            param="output",
        ) from None


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """(H, W, 3) float in [0, 1] (truncated to uint8 like the video frames) or uint8 -> PNG."""
    from PIL import Image

    path = Path(path)
    arr = _frame_u8(_frames(image, 3)[None], 0)
    with _atomic(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


def write_tensors(
    path: str | Path,
    video: torch.Tensor,
    latents: torch.Tensor | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """The float ``video`` (F, H, W, 3) before any uint8 conversion and the final ``latents``, both as float32
    safetensors, for exact comparisons; ``metadata`` goes into the header (e.g. which model ran each step). Written
    tensor by tensor from memory (no serialised copy of the video)."""
    from ltxv.weights.safetensors_file import write_safetensors

    path = Path(path)
    tensors = {"video": video.detach().float().cpu().contiguous()}
    if latents is not None:
        tensors["latents"] = latents.detach().float().cpu().contiguous()
    with _atomic(path) as tmp:
        write_safetensors(tmp, tensors, metadata)
    return path


def save_output(
    path: str | Path,
    video: torch.Tensor,
    latents: torch.Tensor | None = None,
    *,
    fps: float = 30.0,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a generated video (F, H, W, 3) float in [0, 1] by the suffix of ``path``: ``.mp4``, ``.png`` (one
    frame) or ``.safetensors`` (float video + latents, with ``metadata``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return write_mp4(path, video, fps)
    if suffix == ".png":
        if video.shape[0] != 1:
            raise ValueError(f"{path}: a PNG holds one frame, the video has {video.shape[0]}; use .mp4")
        return write_png(path, video[0])
    if suffix == ".safetensors":
        return write_tensors(path, video, latents, metadata)
    raise ValueError(f"{path}: unsupported output type {suffix!r} (use one of {', '.join(OUTPUT_SUFFIXES)})")
