"""What a media file is, from its content: an image Pillow decodes or a video FFmpeg decodes, whatever its name (a
JPEG saved as ``.png`` or an mp4 saved as ``.mov`` is fine). Probing opens the file, decodes its header and its first
frame, and counts a video's frames from the demuxed packets: the facts the preprocessing later relies on (kind,
frame count, size), known before any model is loaded, for a few milliseconds of work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ltxv.io.video import MediaError, _reason, check_file, count_video_frames, is_video, unreadable


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    kind: Literal["image", "video"]
    frames: int  # 1 for an image
    height: int
    width: int


def probe_media(path: str | Path) -> MediaInfo:
    """Probe ``path``; raise :class:`MediaError` saying what the file is when it is neither (empty, text, HTML...)."""
    path = Path(path)
    check_file(path)
    image = _probe_image(path)
    if image is not None:
        return image
    video, why = _probe_video(path)
    if video is not None:
        return video
    kind = "video" if is_video(path) else "image or video"
    raise MediaError(unreadable(path, kind, why))


def _probe_image(path: Path) -> MediaInfo | None:
    """Pillow's verdict: None when it does not know the format at all (then it may be a video); decoded whole,
    since a truncated image is caught only by decoding it (an image decodes in milliseconds)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError) as e:  # a format Pillow knows, damaged
        raise MediaError(f"{path}: not a readable image ({e})") from None
    if min(width, height) < 1:
        raise MediaError(f"{path}: an image of {width}x{height} pixels")
    return MediaInfo(path, "image", 1, height, width)


def _probe_video(path: Path) -> tuple[MediaInfo | None, str]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            first = next(container.decode(video=0), None)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        return None, _reason(e)
    if first is None:
        raise MediaError(f"{path}: the video has no frames")
    return MediaInfo(path, "video", count_video_frames(path), first.height, first.width), ""
