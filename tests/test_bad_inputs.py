"""Every front door refuses bad input the same way (issue 14): the table of ``bad_inputs.CASES`` through the
preflight, ``Pipeline.generate`` and ``ltxv generate`` (in process), each outcome held to the same rules (refused, one
line naming the problem, no traceback, no weights read, nothing left behind); and a few real ``python -m ltxv``
processes, to see that no traceback ever reaches a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_input_table import CASES, write_files
from bad_inputs import DOORS, Bad, Env, assert_refused

from ltxv.pipelines.preflight import Limits, Preflight

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    from transformers import T5EncoderModel

    import ltxv.weights.load as load
    from ltxv.pipelines.generate import Pipeline, load_pipeline
    from ltxv.testing.checkpoints import write_tiny_kit

    root = tmp_path_factory.mktemp("bad-inputs")
    kit = write_tiny_kit(root / "kit")
    files = write_files(root, kit) | {"ckpt": kit.checkpoint, "up": kit.upsampler, "te": kit.text_encoder}
    args = {"dtype": torch.float32, "device": "cpu"}
    pipe = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, **args)
    noup = load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder, **args)
    tight = Pipeline(pipe.models, pipe.text_encoder, "cpu", max_memory=32 * 2**20)
    files_of = (kit.checkpoint, kit.upsampler, kit.text_encoder)
    preflights = {
        "base": Preflight.from_files(*files_of, **args),
        "noup": Preflight.from_files(kit.checkpoint, None, kit.text_encoder, **args),
        "tight": Preflight.from_files(*files_of, max_memory=32 * 2**20, **args),
        "limits": Preflight.from_files(*files_of, limits=Limits(max_pixels=8192, max_frames=5), **args),
        "allowed": Preflight.from_files(files["allowed"], kit.upsampler, kit.text_encoder, **args),
    }
    kit_flags = ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    kit_flags += ["--text-encoder", str(kit.text_encoder), "--device", "cpu", "--dtype", "float32"]
    e = Env(root, files, kit_flags, preflights, {"base": pipe, "noup": noup, "tight": tight}, reads=[])
    # The loader spies: reading any tensor's data, or loading a T5, counts as having read the weights.
    real_iter, real_t5 = load.iter_tensors, T5EncoderModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def iter_tensors(*a, **k):  # type: ignore[no-untyped-def]
        e.reads.append("tensors")
        return real_iter(*a, **k)

    def from_pretrained(cls, *a, **k):  # type: ignore[no-untyped-def]
        e.reads.append("t5")
        return real_t5(cls, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(load, "iter_tensors", iter_tensors)
    mp.setattr(T5EncoderModel, "from_pretrained", classmethod(from_pretrained))
    # Nothing computes in a refused generate: the first thing a run does is encode the prompt.
    for p in (pipe, noup, tight):
        mp.setattr(p.text_encoder, "encode", lambda *a, **k: e.reads.append("computed"))
    yield e
    mp.undo()


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 100, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_door_refuses_cleanly_before_the_weights(case: Bad, env: Env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would show up here
    env.tmp = tmp_path
    outcomes = {out.door: out for door in DOORS if (out := door(case, env, tmp_path)) is not None}
    assert outcomes, f"{case.id}: no door can express it"
    for out in outcomes.values():
        assert_refused(case, out)
    if "preflight" in outcomes and "cli" in outcomes:  # the same words through both doors (the CLI adds its prefix)
        assert outcomes["cli"].text.strip().endswith(outcomes["preflight"].text), (case.id, outcomes)


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ltxv", *argv], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )


def test_real_processes_print_one_line_and_no_traceback(env: Env, tmp_path: Path) -> None:
    """The issue's worst offenders, as a terminal sees them: a pickle text encoder (was a 36-line traceback), a
    corrupt PNG (wrapped in 30 lines after loading), and the default preset without a network (the rest of the
    table runs in process, through the same ``main``)."""
    f = env.files
    base = ["generate", "--prompt", "a kite", "--height", "64", "--width", "96", "--num-frames", "9", "--out", "o.mp4"]
    kit = env.kit_flags
    runs = {
        "pickle text encoder": [*base, *kit, "--text-encoder", str(f["te_pickle"])],
        "corrupt png": [
            *base,
            *kit,
            "--conditioning-media-paths",
            str(f["corrupt_png"]),
            "--conditioning-start-frames",
            "0",
        ],
        "offline default": base,
    }
    for name, argv in runs.items():
        done = _run(*argv, cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, (name, done.stderr)
        assert lines[0].startswith("ltxv"), (name, lines)
    assert "--preset ltxv-demo" in lines[0] or "ltxv demo" in lines[0]  # the offline default says what to do
    assert list(tmp_path.iterdir()) == []
