"""Uploaded media: the type sniffed from the bytes (never the client's file name or content type), stored under a
server-minted name, and probed with pixel and frame limits before any frame is decoded in full."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from ltxv.serve.jobspec import FieldError, Limits

IMAGE_TYPES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif", "bmp": ".bmp"}
VIDEO_TYPES = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi"}
ACCEPTED = "a PNG, JPEG, WebP, GIF or BMP image, or an MP4, MOV, WebM/MKV or AVI video"


class UnsupportedMedia(FieldError):
    """Not an image or video this server reads (415)."""


def sniff(head: bytes) -> str | None:
    """The container of a file from its first bytes: a key of IMAGE_TYPES or VIDEO_TYPES, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[4:8] == b"ftyp":  # ISO base media: MP4, MOV, M4V
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, WebM
        return "matroska"
    return None


def store_upload(part: str, source: BinaryIO, folder: Path, limits: Limits) -> tuple[str, int]:
    """Copy an uploaded part into ``folder`` as ``<part><ext>`` (the extension from the sniffed type), then probe
    it. Returns (file name, frame count). :class:`UnsupportedMedia` / :class:`FieldError` name the part."""
    head = source.read(32)
    kind = sniff(head)
    if kind is None:
        raise UnsupportedMedia(part, f"{part}: not a supported media file; send {ACCEPTED}")
    name = part + (IMAGE_TYPES.get(kind) or VIDEO_TYPES[kind])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "wb") as out:
        out.write(head)
        shutil.copyfileobj(source, out, 1 << 20)
    frames = probe_image(part, path, limits) if kind in IMAGE_TYPES else probe_video(part, path, limits)
    return name, frames


def probe_image(part: str, path: Path, limits: Limits) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only
            w, h = image.size
            if w * h > limits.max_media_pixels:
                raise FieldError(
                    part, f"{part}: a {w}x{h} image; this server decodes at most {limits.max_media_pixels} pixels"
                )
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FieldError(part, f"{part}: not a readable image ({e})") from None
    return 1


def probe_video(part: str, path: Path, limits: Limits) -> int:
    """Frame size from the stream header, frame count from the demuxed packets (no decoding), then one frame
    decoded to prove the stream is readable."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FieldError(part, f"{part}: the file has no video stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            if w * h > limits.max_media_pixels or not w * h:
                raise FieldError(
                    part, f"{part}: {w}x{h} frames; this server decodes at most {limits.max_media_pixels} pixels"
                )
            frames = 0
            for packet in container.demux(stream):
                frames += packet.size > 0
                if frames > limits.max_media_frames:
                    raise FieldError(part, f"{part}: more than {limits.max_media_frames} frames, this server's limit")
        with av.open(str(path)) as container:
            next(container.decode(video=0))
    except (av.FFmpegError, OSError, StopIteration, UnicodeDecodeError) as e:
        raise FieldError(
            part, f"{part}: not a readable video ({getattr(e, 'strerror', None) or e or 'no frames'})"
        ) from None
    if frames == 0:
        raise FieldError(part, f"{part}: the video has no frames")
    return frames
