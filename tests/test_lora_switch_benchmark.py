"""Keeps ``benchmarks/lora_switch.py`` alive at CI size (it asserts nothing about time)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lora_switch


@pytest.mark.slow  # four fresh processes: about a minute on a busy 2-core machine
def test_lora_switch_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "switch.json"
    res = lora_switch.main(
        ["--layers", "1", "--heads", "2", "--rank-a", "4", "--rank-b", "8", "--repeat", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert [s["to"] for s in res["switch_steps"]] == list(lora_switch.SEQUENCE)
    assert res["reload_seconds"] > 0 and res["warm_switch_over_reload"] > 0
    d = 128  # 2 heads of 64: B touches every block linear (8 attention D x D, 2 feed-forward 4D x D), bf16 copies
    assert res["base_copy_bytes"] == (8 * d * d + 2 * 4 * d * d) * 2
