"""Naming a file by its first bytes, so an error can say what a file *is* when it is not what ltxv reads ("this is a
GGUF file", "an HTML page"), whatever its name says. Nothing is parsed beyond the magic bytes (a zip's directory
excepted, to tell a torch checkpoint from other archives); nothing is ever unpickled."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

_HEAD = 512


def _safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def describe(head: bytes, size: int | None = None, path: Path | None = None) -> str | None:
    """What the file starting with ``head`` (its first bytes; ``size`` its length) is, as a noun phrase ("a GGUF
    file"), or None when the bytes say nothing known."""
    size = len(head) if size is None else size
    if size == 0:
        return "an empty file"
    if _safetensors(head, size):
        return "a safetensors file"
    if head.startswith(b"GGUF"):
        return "a GGUF file (llama.cpp-style quantised weights)"
    if head.startswith(b"PK\x03\x04"):
        return _zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle, as torch.save or pickle.dump writes"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy array file"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (fetch it with git lfs pull)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page (a download that saved a web page instead of the file)"
    if text.startswith(b"<?xml"):
        return "an XML document"
    if text.startswith((b"{", b"[")) and _json(head, size):
        return "a JSON document"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"AVI ", b"WAVE"):
        return {b"WEBP": "a WebP image", b"AVI ": "an AVI video", b"WAVE": "a WAV audio file"}[head[8:12]]
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if _text(head):
        return "a text file"
    return None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
)


def _zip(path: Path | None) -> str:
    try:
        names = zipfile.ZipFile(path).namelist() if path is not None else []
    except (OSError, zipfile.BadZipFile):
        names = []
    if any(n.endswith("data.pkl") for n in names):
        return "a pickled/zip torch checkpoint, as torch.save writes"
    return "a zip archive"


def _json(head: bytes, size: int) -> bool:
    if size > len(head):
        return True  # a long file starting like JSON: good enough for a name
    try:
        json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut by the end of the sample
            return False
        text = head[: e.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def describe_file(path: str | Path) -> str | None:
    """:func:`describe` of the file at ``path`` (None if it cannot be read)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
        return describe(head, path.stat().st_size, path)
    except OSError:
        return None
