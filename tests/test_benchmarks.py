"""Keeps the benchmark command alive at CI size (it asserts nothing about time)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import transformer_step


def test_transformer_step_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("ltx_video")
    out = tmp_path / "bench.json"
    res = transformer_step.main(
        ["--layers", "1", "--height", "64", "--width", "64", "--frames", "9", "--repeat", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    for dtype in ("float32", "bfloat16"):
        row = res[dtype]
        assert row["ltxv"]["seconds"] > 0 and row["reference"]["seconds"] > 0 and row["matmul_peak_flops"] > 0


def test_flop_count_closed_form() -> None:
    from ltxv.config import TRANSFORMER_2B

    d, n, el = 2048, 4290, 128
    per_block = 2 * (4 * d * d * n + 2 * n * n * d + 2 * d * d * n + 2 * d * d * el + 2 * n * el * d + 8 * d * d * n)
    total = transformer_step.step_flops(TRANSFORMER_2B, n, el)
    assert total == 28 * per_block + 2 * n * d * 256
    assert 17e12 < total < 20e12  # the brief's "about 18 TFLOP" for 704x480x97 with 128 text tokens


def test_one_command_at_ci_size_checks_the_targets(tmp_path: Path) -> None:
    """Parts (b)-(d) of ``benchmarks/run.py --ci`` ((a) runs above): every column runs, the streamed decode equals
    the one-shot decode and the reference's bit for bit, and the targets are evaluated."""
    pytest.importorskip("ltx_video")
    pytest.importorskip("diffusers")
    import run

    out = tmp_path / "all.json"
    res = run.main(["--ci", "--parts", "b", "c", "d", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    diffs = res["vae_decode"]["max_abs_diff"]
    assert diffs["ltxv_stream vs ltxv_oneshot"] == 0 and diffs["ltxv_stream vs reference"] == 0
    assert diffs["diffusers vs reference"] < 1e-4
    e2e = res["end_to_end"]
    assert all("error" not in e2e[impl] for impl in ("ltxv", "reference", "diffusers"))
    assert {"ltxv_over_reference", "ltxv_over_diffusers"} <= set(e2e)
    fp8 = res["fp8_quality"]
    assert 25 < fp8["fp8-scaled"]["psnr_db_vs_bf16"] < 80 and fp8["fp8-cast"]["psnr_db_vs_bf16"] < 80
    targets = {t["name"]: t for t in res["targets"]}
    assert targets["(d) fp8 transformer weights / bf16, real 2B shape"]["pass"] is True
    assert targets["(b) decode, max |streamed - one-shot|"]["pass"] is True
