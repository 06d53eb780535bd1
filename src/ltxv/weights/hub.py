"""Turning a local path or the name of a released file into a local path, via the Hugging Face cache.

Like the reference CLI, a name that is not a local file is fetched from ``Lightricks/LTX-Video`` with
``hf_hub_download``; unlike it, the cache is tried first without touching the network, and an unreachable hub is a
prompt :class:`LoadError` naming the file rather than a minute of retries.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from huggingface_hub import hf_hub_download, snapshot_download

from ltxv.weights.errors import LoadError

Kind = Literal["checkpoint", "upsampler", "text_encoder"]

HUB_REPO = "Lightricks/LTX-Video"
DEFAULT_TEXT_ENCODER = "PixArt-alpha/PixArt-XL-2-1024-MS"
TEXT_ENCODER_PATTERNS = ["text_encoder/*", "tokenizer/*"]
ETAG_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0

# The released single files of the hub repo (study §1.4), by what they hold.
RELEASED_FILES: dict[str, Kind] = {
    **{
        f"{stem}.safetensors": "checkpoint"
        for stem in (
            "ltx-video-2b-v0.9",
            "ltx-video-2b-v0.9.1",
            "ltx-video-2b-v0.9.5",
            "ltxv-2b-0.9.6-dev-04-25",
            "ltxv-2b-0.9.6-distilled-04-25",
            "ltxv-13b-0.9.7-dev",
            "ltxv-13b-0.9.7-dev-fp8",
            "ltxv-13b-0.9.7-distilled",
            "ltxv-13b-0.9.7-distilled-fp8",
            "ltxv-13b-0.9.8-dev",
            "ltxv-13b-0.9.8-dev-fp8",
            "ltxv-13b-0.9.8-distilled",
            "ltxv-13b-0.9.8-distilled-fp8",
            "ltxv-2b-0.9.8-distilled",
            "ltxv-2b-0.9.8-distilled-fp8",
        )
    },
    "ltxv-spatial-upscaler-0.9.7.safetensors": "upsampler",
    "ltxv-spatial-upscaler-0.9.8.safetensors": "upsampler",
    "ltxv-temporal-upscaler-0.9.7.safetensors": "upsampler",
}
# Preset names whose checkpoint file carries a date suffix.
ALIASES = {
    "ltxv-2b-0.9.6-dev": "ltxv-2b-0.9.6-dev-04-25.safetensors",
    "ltxv-2b-0.9.6-distilled": "ltxv-2b-0.9.6-distilled-04-25.safetensors",
}


def hub_filename(name: str, kind: Kind) -> str:
    """The hub file a released name refers to: ``x`` or ``x.safetensors`` for a released file, or a preset alias.
    Any other bare ``*.safetensors`` name is passed through (the reference fetches whatever it is given)."""
    if "/" in name or os.sep in name:
        raise LoadError(f"{name}: no such file")
    filename = ALIASES.get(name, name if name.endswith(".safetensors") else f"{name}.safetensors")
    known = RELEASED_FILES.get(filename)
    if known is None and not name.endswith(".safetensors"):
        names = sorted(
            {f.removesuffix(".safetensors") for f, k in RELEASED_FILES.items() if k == kind}
            | {a for a, f in ALIASES.items() if RELEASED_FILES[f] == kind}
        )
        raise LoadError(f"{name}: no such file, and not a released {kind} name (known: {', '.join(names)})")
    if known is not None and known != kind:
        raise LoadError(f"{filename} is a released {known} file, not a {kind}")
    return filename


def resolve(name_or_path: str | Path, kind: Kind) -> Path:
    """An existing local path as is; else the cached (or freshly downloaded) hub file or text-encoder snapshot."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    if kind == "text_encoder":
        if name.count("/") != 1 or name.startswith(("/", ".", "~")):
            raise LoadError(f"text encoder {name}: no such folder, and not a hub repo id like {DEFAULT_TEXT_ENCODER}")
        return _snapshot(name)
    return _file(hub_filename(name, kind))


def _file(filename: str) -> Path:
    try:
        return Path(hf_hub_download(HUB_REPO, filename, local_files_only=True))
    except OSError:  # LocalEntryNotFoundError: not cached
        pass
    what = f"{filename} (hub repo {HUB_REPO})"
    _require_online(what)
    try:
        return Path(hf_hub_download(HUB_REPO, filename, etag_timeout=ETAG_TIMEOUT_S))
    except Exception as e:  # the hub raises requests, httpx or its own errors depending on its version
        raise LoadError(f"{what} is not in the local Hugging Face cache and could not be downloaded: {e}") from e


def _snapshot(repo_id: str) -> Path:
    what = f"text encoder {repo_id} (no such local folder; as a hub repo: {', '.join(TEXT_ENCODER_PATTERNS)})"
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=TEXT_ENCODER_PATTERNS, local_files_only=True))
        # A cached snapshot folder may hold other files of the repo but not these two.
        if all((path / p.split("/")[0]).is_dir() for p in TEXT_ENCODER_PATTERNS):
            return path
    except (OSError, ValueError):  # not cached; or not a valid repo id, which the download below reports
        pass
    _require_online(what)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=TEXT_ENCODER_PATTERNS, etag_timeout=ETAG_TIMEOUT_S))
    except Exception as e:  # as in _file
        raise LoadError(f"{what} is not in the local Hugging Face cache and could not be downloaded: {e}") from e


def _require_online(what: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise LoadError(
            f"{what} is not in the local Hugging Face cache and could not be downloaded: HF_HUB_OFFLINE is set"
        )
    if not hub_reachable():
        host = urlparse(_endpoint()).hostname
        raise LoadError(
            f"{what} is not in the local Hugging Face cache and could not be downloaded: {host} is unreachable"
        )


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """One short TCP connect: the hub client itself retries a dead network for about half a minute."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; let the hub client try
    url = urlparse(_endpoint())
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False
