"""The table of bad inputs every front door must refuse the same way (issue 14), and the doors that run them.

A :class:`Bad` row is one bad input: request fields over a valid base request (run through every door that can
express them: the preflight, ``Pipeline.generate``, ``ltxv generate``), CLI flags (the CLI door only) or an API call
(the API door only), with a fragment of the one-line message it must give and the request field it must name.
Each door returns an :class:`Outcome`; :func:`assert_refused` holds every outcome to the same rules: refused (exit
status 2 or an :class:`~ltxv.errors.LtxvError`), one line naming the problem, no traceback, no weights read
(``after_load`` rows excepted), no file left behind.

The rows and the files they name are in ``bad_input_table.py``. To add a door (the job service): write
``def door_service(case: Bad, env: Env, tmp: Path) -> Outcome | None`` (None where the door cannot express the
case) and run the rows through it with :func:`assert_refused`; rows that only one door has go in the table with
``flags=`` / ``call=`` / ``argv=`` as there.
"""

from __future__ import annotations

import contextlib
import io
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ltxv.errors import LtxvError
from ltxv.pipelines.request import ConditioningMedia, ControlVideo, GenerationRequest

BASE = {"prompt": "a kite over hills", "height": 64, "width": 96, "num_frames": 9, "seed": 1}
TRACE = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Bad:
    id: str
    message: str  # a fragment of the one line
    fields: dict[str, Any] | None = None  # request fields over BASE ("@name" strings: the env's files)
    flags: tuple[str, ...] | None = None  # ltxv generate flags over the base command (CLI door only)
    call: Callable[[Env], Any] | None = None  # an API call (API door only)
    argv: tuple[str, ...] | None = None  # a whole ltxv command line instead of generate's (CLI door only)
    param: str | type(...) | None = ...  # the LtxvError.param the API doors must give (... = not checked)
    variant: str = "base"  # which preflight / pipeline the API doors use (Env.preflights / Env.pipes)
    after_load: bool = False  # can only be judged once the weights are read


@dataclass
class Outcome:
    door: str
    refused: bool  # exit status 2, or an LtxvError
    text: str  # stderr, or the exception's message
    traceback: bool
    loaded: bool  # a weight tensor was read or a T5 loaded
    left: list[str] = field(default_factory=list)  # files the attempt left behind


@dataclass
class Env:
    root: Path
    files: dict[str, Path]
    kit_flags: list[str]
    preflights: dict[str, Any]
    pipes: dict[str, Any]
    reads: list[str]  # appended to by the loader spies
    tmp: Path = Path("/nonexistent")  # the folder of the case being run ("@tmp/...")

    def path(self, v: Any) -> Any:
        """``@name`` / ``@name/rest``: the env's file of that name (``@tmp``: the case's own folder)."""
        if isinstance(v, str) and v.startswith("@"):
            name, _, rest = v[1:].partition("/")
            base = self.tmp if name == "tmp" else self.files[name]
            return str(base / rest) if rest else str(base)
        if isinstance(v, ConditioningMedia | ControlVideo):
            return replace(v, media=self.path(v.media))
        if isinstance(v, tuple | list) and v and isinstance(v[0], ConditioningMedia | ControlVideo):
            return tuple(self.path(c) for c in v)
        return v


def request_of(case: Bad, env: Env) -> GenerationRequest:
    from ltxv.pipelines.presets import get_preset, load_recipe

    fields = {k: env.path(v) for k, v in (case.fields or {}).items()}
    recipe = fields.get("recipe")
    if isinstance(recipe, str) and recipe.startswith("preset:"):
        fields["recipe"] = get_preset(recipe.removeprefix("preset:"))
    elif isinstance(recipe, str) and recipe.startswith("yaml:"):
        fields["recipe"] = load_recipe(env.files[recipe.removeprefix("yaml:")])
    return GenerationRequest(**{**BASE, **fields})


# --- the CLI flags a request's fields are ---------------------------------------------------------------------------

_SCALAR_FLAGS = {
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "height": "--height",
    "width": "--width",
    "num_frames": "--num-frames",
    "frame_rate": "--frame-rate",
    "seed": "--seed",
    "image_cond_noise_scale": "--image-cond-noise-scale",
    "denoise_strength": "--denoise-strength",
    "input_media": "--input-media-path",
    "temporal_tile_frames": "--temporal-tile-frames",
    "temporal_overlap_frames": "--temporal-overlap-frames",
    "overlap_strength": "--overlap-strength",
    "adain_factor": "--adain-factor",
    "transformer_schedule": "--transformer-schedule",
    "cache": "--cache",
}
_TYPES = {
    "height": int,
    "width": int,
    "num_frames": int,
    "seed": int,
    "temporal_tile_frames": int,
    "temporal_overlap_frames": int,
    "transformer_schedule": str,
}


def flags_of(fields: dict[str, Any], env: Env) -> list[str] | None:
    """The ``ltxv generate`` flags meaning ``fields``, or None where a flag cannot say it (a tensor, a wrong type)."""
    out: list[str] = []
    for k, v in fields.items():
        v = env.path(v)
        if k in _SCALAR_FLAGS:
            want = _TYPES.get(k, str if k in ("prompt", "negative_prompt", "input_media", "cache") else float)
            if isinstance(v, bool) or not isinstance(v, want | (int if want is float else want)):
                return None
            out += [_SCALAR_FLAGS[k], repr(v) if isinstance(v, float) and not math.isfinite(v) else str(v)]
        elif k == "conditioning" and isinstance(v, tuple) and len(v) == 1 and isinstance(v[0], ControlVideo):
            c = v[0]  # what --control-video can say: a file, the first pass, strength 1
            if not isinstance(c.media, str) or tuple(c.passes) != (0,) or c.strength != 1.0:
                return None
            out += ["--control-video", c.media, *(["--control-preprocess", c.preprocess] if c.preprocess else [])]
        elif k == "conditioning":
            if not isinstance(v, tuple) or not all(isinstance(c, ConditioningMedia) for c in v):
                return None
            if not all(
                isinstance(c.media, str) and isinstance(c.frame, int) and isinstance(c.strength, float | int) for c in v
            ):
                return None
            out += ["--conditioning-media-paths", *(c.media for c in v)]
            out += ["--conditioning-start-frames", *(str(c.frame) for c in v)]
            out += ["--conditioning-strengths", *(str(c.strength) for c in v)]
        elif k == "recipe" and isinstance(v, str) and v.startswith("preset:"):
            out += ["--preset", v.removeprefix("preset:")]
        elif k == "recipe" and isinstance(v, str) and v.startswith("yaml:"):
            out += ["--pipeline-config", str(env.files[v.removeprefix("yaml:")])]
        else:
            return None
    return out


# --- the doors ------------------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@contextlib.contextmanager
def _watch(env: Env, tmp: Path) -> Iterator[Outcome]:
    """An outcome filled by the block: reads and files left behind are recorded around it."""
    before, media = _snapshot(tmp), _snapshot(env.root)
    env.reads.clear()
    outcome = Outcome(door="", refused=False, text="", traceback=False, loaded=False)
    yield outcome
    outcome.loaded = bool(env.reads)
    outcome.left = sorted((_snapshot(tmp) - before) | (_snapshot(env.root) - media))


def _api(door: str, env: Env, tmp: Path, fn: Callable[[], Any]) -> Outcome:
    with _watch(env, tmp) as out:
        out.door = door
        try:
            fn()
        except LtxvError as e:
            out.refused, out.text = True, str(e)
            out.param = e.param  # type: ignore[attr-defined]
        except Exception as e:  # a bare TypeError or a torch error is exactly what must not happen
            out.text, out.traceback = "".join(traceback.format_exception(e)), True
    return out


def door_preflight(case: Bad, env: Env, tmp: Path) -> Outcome | None:
    if case.fields is None:
        return None
    pre = env.preflights.get(case.variant)
    if pre is None:
        return None
    return _api("preflight", env, tmp, lambda: pre.check(request_of(case, env), tmp / "out.mp4"))


def door_api(case: Bad, env: Env, tmp: Path) -> Outcome | None:
    if case.call is not None:
        return _api("api", env, tmp, lambda: case.call(env))  # type: ignore[misc]
    if case.fields is None:
        return None
    pipe = env.pipes.get(case.variant)
    if pipe is None:
        return None
    return _api("api", env, tmp, lambda: pipe.generate(request_of(case, env)))


def door_cli(case: Bad, env: Env, tmp: Path) -> Outcome | None:
    from ltxv import cli

    if case.argv is not None:
        argv = [env.path(a) for a in case.argv]
    else:
        if case.variant != "base" or case.call is not None:
            return None
        extra = flags_of(case.fields, env) if case.fields is not None else [env.path(f) for f in case.flags or ()]
        if extra is None:
            return None
        base = ["--prompt", BASE["prompt"], "--height", "64", "--width", "96", "--num-frames", "9", "--seed", "1"]
        argv = ["generate", *base, *env.kit_flags, "--out", str(tmp / "out.mp4"), *extra]  # later flags win
    err = io.StringIO()
    with _watch(env, tmp) as out, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        out.door = "cli"
        try:
            rc = cli.main(argv)
        except BaseException as e:  # main must return, whatever the input
            rc, out.traceback = None, True
            err.write("".join(traceback.format_exception(e)))
        out.refused, out.text = rc == 2, err.getvalue()
    out.traceback = out.traceback or TRACE in out.text
    return out


DOORS = (door_preflight, door_api, door_cli)


def assert_refused(case: Bad, out: Outcome) -> None:
    where = f"{case.id} via {out.door}"
    assert not out.traceback, f"{where}: traceback\n{out.text}"
    assert out.refused, f"{where}: not refused: {out.text!r}"
    lines = [line for line in out.text.splitlines() if line.strip()]
    if out.door == "cli":
        lines = [line for line in lines if not line.startswith(("INFO:", "WARNING:"))]  # ltxv's own log lines
        assert len(lines) == 1 and lines[0].startswith("ltxv"), f"{where}: not one error line: {out.text!r}"
    else:
        assert len(lines) == 1, f"{where}: not one line: {out.text!r}"
    assert case.message in lines[0], f"{where}: {case.message!r} not in {lines[0]!r}"
    if out.door != "cli" and case.param is not ...:
        assert getattr(out, "param", None) == case.param, f"{where}: param {getattr(out, 'param', None)!r}"
    assert out.loaded == case.after_load, f"{where}: weights read: {out.loaded} (expected {case.after_load})"
    assert out.left == [], f"{where}: left behind {out.left}"
