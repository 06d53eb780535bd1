"""The store folder: ``jobs.sqlite3`` and the files of every job, named by the server only.

    DIR/jobs.sqlite3            the job store (:mod:`ltxv.serve.store`)
    DIR/inputs/<id>/<part>.<ext> uploaded media, named after the form part and the sniffed type, never the client's name
    DIR/outputs/<id>/a<N>.mp4    the result of attempt N (and a<N>.jpg, its thumbnail); preview.jpg, the latest preview

An output is written to a hidden temporary file, fsynced, renamed into place and its folder fsynced; only then is the
job committed (fenced), naming the file. A crash at any point leaves either nothing or a file that no job names:
:func:`sweep` removes those, and the folders of jobs that no longer exist.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ltxv.serve.store import SqliteJobStore

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^video_[0-9a-f]{32}$")
PREVIEW = "preview.jpg"
TEMP_PREFIX = ".tmp-"


def new_job_id() -> str:
    return f"video_{secrets.token_hex(16)}"


class StoreDir:
    """Paths inside a store folder, from server-minted ids only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.db = self.root / "jobs.sqlite3"
        self.inputs = self.root / "inputs"
        self.outputs = self.root / "outputs"

    def job_inputs(self, job_id: str) -> Path:
        return self.inputs / _checked(job_id)

    def job_outputs(self, job_id: str) -> Path:
        return self.outputs / _checked(job_id)

    def output_file(self, job_id: str, name: str) -> Path:
        """A file a job's output record names (a plain name written by a worker, checked anyway)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"not an output file name: {name!r}")
        return self.job_outputs(job_id) / name

    def remove_job(self, job_id: str) -> None:
        for folder in (self.job_inputs(job_id), self.job_outputs(job_id)):
            shutil.rmtree(folder, ignore_errors=True)


def _checked(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(target: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` a hidden temporary file next to ``target``, fsync it, rename it onto ``target`` and fsync the
    folder: afterwards ``target`` is complete on disk or absent. The temporary file is removed if anything fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{target.name}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def sweep(store: SqliteJobStore, layout: StoreDir, *, grace_s: float = 3600.0) -> list[Path]:
    """Remove what no job needs: folders of jobs that do not exist (an input folder only once older than
    ``grace_s``, so an upload in progress, whose row is not written yet, is left alone), and in a finished job's output folder every file its
    output does not name (but its preview). A running job's folder is left alone. Returns what was removed."""
    store.reap()
    removed: list[Path] = []
    now = time.time()
    for parent in (layout.inputs, layout.outputs):
        if not parent.is_dir():
            continue
        folders = sorted(p for p in parent.iterdir())
        jobs = store.job_ids()  # read after listing: a folder whose row is missing now had no row when listed
        for folder in folders:
            job = jobs.get(folder.name)
            if job is None:  # outputs are written after the row; inputs before it, so they get the grace period
                if parent == layout.outputs or now - _mtime(folder) >= grace_s:
                    _remove(folder, removed)
                continue
            if parent == layout.outputs and job.state in ("completed", "failed"):
                keep = {PREVIEW, *((job.output or {}).values())} if job.state == "completed" else {PREVIEW}
                for f in folder.iterdir():
                    if f.name not in keep:
                        _remove(f, removed)
    if removed:
        log.info("swept %d unreferenced file(s)", len(removed))
    return removed


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _remove(p: Path, removed: list[Path]) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(p)
    except FileNotFoundError:
        pass
