"""``ltxv generate --parallel 2`` and ``torchrun --nproc-per-node 2 -m ltxv generate``: real processes, gloo on this
CPU, the tiny model; the video equals the single-process command's within 1e-5 and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ltxv.testing.checkpoints import write_tiny_kit

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    kit = write_tiny_kit(tmp_path_factory.mktemp("kit"))
    model = ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    model += ["--text-encoder", str(kit.text_encoder), "--device", "cpu", "--dtype", "float32"]
    # 96 x 96 x 17 under the distilled multi-scale recipe: 3 and 27 latent tokens per pass, neither even.
    return ["generate", "--prompt", "a fox", "--height", "96", "--width", "96", "--num-frames", "17", *model]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def single(argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ltxv.cli import main

    out = tmp_path_factory.mktemp("single") / "v.safetensors"
    assert main([*argv, "--out", str(out)]) == 0  # the same command in this process, no group
    return load_file(out)


def _check(out: Path, single: dict) -> None:
    got = load_file(out)
    assert set(got) == set(single)
    for k in single:
        assert (got[k] - single[k]).abs().max() <= 1e-5, k
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # one writer, no temporary leftovers


def test_parallel_flag(argv: list[str], single: dict, tmp_path: Path) -> None:
    out = tmp_path / "v.safetensors"
    p = _run([sys.executable, "-m", "ltxv", *argv, "--out", str(out), "--parallel", "2"], tmp_path)
    assert p.stdout.count("wrote") == 1
    _check(out, single)


@pytest.mark.slow
def test_torchrun(argv: list[str], single: dict, tmp_path: Path) -> None:
    out = tmp_path / "v.safetensors"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    p = _run([*torchrun, "-m", "ltxv", *argv, "--out", str(out)], tmp_path)
    assert p.stdout.count("wrote") == 1
    _check(out, single)


def test_bad_rank_count_is_one_line(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ltxv.cli import main

    assert main([*argv, "--out", str(tmp_path / "v.mp4"), "--parallel", "0"]) == 2
    assert capsys.readouterr().err.strip() == "ltxv: error: --parallel must be at least 1, got 0"
    assert not (tmp_path / "v.mp4").exists()
