"""A Hugging Face cache holding a tiny kit under the released names, laid out as ``huggingface_hub`` keeps its cache
(``models--{org}--{name}/refs/main`` naming a snapshot, the files under ``snapshots/<commit>/``). With the cache
pointed at it, ``ltxv.weights.hub.resolve("ltxv-2b-0.9.8-distilled.safetensors")`` finds the tiny checkpoint
offline, through the real lookup: the README's examples and the default preset run in the tests unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ltxv.testing.checkpoints import TinyKit
from ltxv.weights.hub import DEFAULT_TEXT_ENCODER, HUB_REPO, RELEASED_FILES

COMMIT = "0" * 40


def _snapshot(cache: Path, repo: str) -> Path:
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    os.symlink(target.resolve(), link, target_is_directory=target.is_dir())


def write_hub_cache(cache: str | Path, kit: TinyKit) -> Path:
    """Every released checkpoint and upsampler name of :data:`ltxv.weights.hub.RELEASED_FILES` as a link to the
    kit's file, and the default text encoder repo's ``text_encoder/`` and ``tokenizer/`` as links to the kit's.
    Returns ``cache`` (set ``huggingface_hub.constants.HF_HUB_CACHE`` to it)."""
    cache = Path(cache)
    snap = _snapshot(cache, HUB_REPO)
    for name, kind in RELEASED_FILES.items():
        _link(kit.checkpoint if kind == "checkpoint" else kit.upsampler, snap / name)
    text = _snapshot(cache, DEFAULT_TEXT_ENCODER)
    for sub in ("text_encoder", "tokenizer"):
        _link(kit.text_encoder / sub, text / sub)
    return cache
