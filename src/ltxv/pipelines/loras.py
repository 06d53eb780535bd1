"""LoRAs as the front doors name them: ``PATH[:SCALE]`` (CLI, YAML), ``{path, scale}`` (YAML), and for a service
``{"name", "scale"}``, names from one server-side folder (:class:`LoraRegistry`), since clients never send a path.

A name is a ``.safetensors`` file's stem in the folder (``style`` for ``<dir>/style.safetensors``), or its path
relative to the folder without the suffix for files in subfolders (``control/depth``). Anything else is refused:
absolute paths, ``..``, backslashes, a suffix, hidden files, names not in the folder, and files that resolve outside
it (a symlink out of the folder), so a client can only pick among the files the operator put there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ltxv.errors import LtxvError
from ltxv.pipelines.request import ControlVideo, GenerationRequest, Lora, RequestError

SUFFIX = ".safetensors"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


def parse_lora_arg(text: str, param: str = "lora") -> Lora:
    """``PATH[:SCALE]`` -> :class:`Lora`; a trailing ``:number`` is the scale (default 1), so paths with colons work
    as long as they do not end in one."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return Lora(path, float(tail))
        except ValueError:
            pass
    if not text.strip():
        raise RequestError(f"{param}: a LoRA needs a file: PATH[:SCALE]", param=param)
    return Lora(text)


def parse_lora_entry(where: str, entry: object) -> Lora:
    """One entry of a config's ``loras:`` list: ``PATH[:SCALE]`` or a mapping ``{path: ..., scale: ...}``."""
    if isinstance(entry, str):
        return parse_lora_arg(entry, where)
    if not isinstance(entry, dict) or set(entry) - {"path", "scale"} or "path" not in entry:
        raise RequestError(f"{where}: expected PATH[:SCALE] or {{path: ..., scale: ...}}, got {entry!r}", param=where)
    lora = Lora(entry["path"], entry.get("scale", 1.0))
    lora.validate(where)
    return lora


class LoraRegistry:
    """The LoRA files under ``folder`` by name (module docstring). The folder is listed again on every lookup that
    misses, so files added while a service runs are found without a restart."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise LtxvError(
                f"LoRA folder {self.folder} does not exist or is not a folder", param="lora_dir", code="file"
            )
        self._root = self.folder.resolve()

    def names(self) -> list[str]:
        """Every name a client may use, sorted."""
        out = []
        for path in self._root.rglob(f"*{SUFFIX}"):
            rel = path.relative_to(self._root).as_posix()[: -len(SUFFIX)]
            if _NAME.fullmatch(rel) and path.is_file() and self._inside(path):
                out.append(rel)
        return sorted(out)

    def resolve(self, name: object, param: str = "loras") -> Path:
        """The file of ``name``; :class:`RequestError` naming the problem for anything that is not a listed name."""
        if not isinstance(name, str) or not name:
            raise RequestError(f"a LoRA name must be a non-empty string, got {name!r}", param=param)
        if not _NAME.fullmatch(name) or name.endswith(SUFFIX) or ".." in name.split("/"):
            raise RequestError(
                f"LoRA {name!r}: give the name of a LoRA the server offers (a file name without folders' paths "
                f"or {SUFFIX}), not a path",
                param=param,
            )
        path = self._root / f"{name}{SUFFIX}"
        if not (path.is_file() and self._inside(path)):
            known = self.names()
            listing = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise RequestError(f"unknown LoRA {name!r}; the server offers: {listing or 'none'}", param=param)
        return path

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self._root)

    def loras(self, entries: object) -> tuple[Lora, ...]:
        """A request's ``loras: [{"name": ..., "scale": ...}, ...]`` (wire format) -> the files and scales."""
        if not isinstance(entries, list | tuple):
            raise RequestError(f"loras must be a list of {{name, scale}} objects, got {entries!r}", param="loras")
        out = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or set(e) - {"name", "scale"} or "name" not in e:
                raise RequestError(
                    f'loras[{i}]: expected {{"name": ..., "scale": ...}}, got {e!r}', param=f"loras[{i}]"
                )
            lora = Lora(self.resolve(e["name"], f"loras[{i}].name"), e.get("scale", 1.0))
            lora.validate(f"loras[{i}]")
            out.append(lora)
        return tuple(out)


def with_lora_flags(
    request: GenerationRequest,
    *,
    loras: Sequence[Lora] = (),
    control_video: str | None = None,
    control_preprocess: str | None = None,
    control_loras: Sequence[Lora] = (),
    detailer_loras: Sequence[Lora] = (),
) -> GenerationRequest:
    """The CLI's LoRA and control flags applied to a request: ``loras`` become every pass's set (replacing the
    config's); ``control_video`` conditions the first pass, ``control_loras`` join the first pass's set (the IC-LoRA
    that reads it, as the official control workflow: not the second pass); ``detailer_loras`` join the last pass's
    set and that pass is guided by its own starting latents (the 0.9.8 detailer: a multi-scale recipe's upsampled
    first pass, or a video-to-video source)."""
    recipe = request.recipe.with_loras(loras) if loras else request.recipe
    passes = list(recipe.passes)
    conditioning = list(request.conditioning)
    if control_video is not None:
        conditioning.append(ControlVideo(control_video, preprocess=control_preprocess))
    elif control_preprocess is not None:
        raise RequestError("--control-preprocess needs --control-video", param="control_preprocess")
    if control_loras:
        passes[0] = replace(passes[0], loras=(*(passes[0].loras or ()), *control_loras))
    if detailer_loras:
        last = len(passes) - 1
        if last == 0 and request.input_media is None:
            raise RequestError(
                "a detailer LoRA refines a pass that starts from latents: use a multi-scale recipe (it details the "
                "second pass) or give --input-media-path",
                param="detailer_lora",
            )
        passes[last] = replace(passes[last], loras=(*(passes[last].loras or ()), *detailer_loras))
        conditioning.append(ControlVideo(None, passes=(last,)))
    recipe = replace(recipe, first_pass=passes[0], second_pass=passes[1] if len(passes) > 1 else recipe.second_pass)
    return replace(request, recipe=recipe, conditioning=tuple(conditioning))
