"""The one benchmark command (issue 4): ltxv vs the reference (``ltx-video`` 0.1.2) vs diffusers, identical random
weights, the same work, in one run.

(a) ``transformer_step``: one step of the real 2B transformer shape at 704x480x97, fp32 and bf16;
(b) ``vae_decode``: the real-size 0.9.5 VAE decode of the same video (run when ``benchmarks/vae_decode.py`` exists);
(c) ``end_to_end``: the distilled multi-scale recipe on a mid-sized random model at 512x320x49;
(d) ``fp8_quality``: fp8 weights against bf16, PSNR of the decoded video (same seed) and the weight memory saved.

Each part runs every implementation in its own process. Everything lands in one JSON; a summary table lists the key
ratios with the issue's targets and pass/fail. See ``benchmarks/README.md``.

    python benchmarks/run.py --json bench.json     # real sizes: for a big machine
    python benchmarks/run.py --ci                  # tiny sizes: keeps the command alive, says nothing about speed
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, when run from anywhere


@dataclass(frozen=True)
class Target:
    """A measure that must stay at or below ``limit`` (at or above it when ``at_least``); ``path`` leads to it in the
    merged JSON."""

    name: str
    path: tuple[str, ...]
    limit: float
    at_least: bool = False

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


_STEP = "transformer_step"
TARGETS = (  # issue 4's targets
    Target("(a) bfloat16 ltxv fraction of matmul peak", (_STEP, "bfloat16", "ltxv", "fraction_of_peak"), 0.8, True),
    Target("(a) bfloat16 step time, ltxv / reference", (_STEP, "bfloat16", "ltxv_over_reference"), 0.7),
    Target("(a) float32 ltxv fraction of matmul peak", (_STEP, "float32", "ltxv", "fraction_of_peak"), 0.88, True),
    # Bit-equal at the CI size; at the real size oneDNN's fp32 convolutions round differently for the streamed
    # (shorter) inputs than for the whole clip: measured 3.7e-6, the same as diffusers vs the reference (3.9e-6).
    Target(
        "(b) decode, max |streamed - one-shot|", ("vae_decode", "max_abs_diff", "ltxv_stream vs ltxv_oneshot"), 1e-5
    ),
    Target(
        "(b) decode working memory, ltxv / reference",
        ("vae_decode", "ratios", "ltxv_stream/reference", "working_memory"),
        0.25,
    ),
    Target("(c) end-to-end wall time, ltxv / reference", ("end_to_end", "ltxv_over_reference", "total_seconds"), 0.7),
    Target("(c) end-to-end peak RSS, ltxv / reference", ("end_to_end", "ltxv_over_reference", "peak_rss"), 0.6),
    Target("(d) fp8 transformer weights / bf16, real 2B shape", ("fp8_quality", "real_shape_weight_ratio", "2B"), 0.55),
)
PARTS = ("transformer_step", "vae_decode", "end_to_end", "fp8_quality")


def part_args(ci: bool, layers: int, dtype: str) -> dict[str, list[str]]:
    """Each part's command line: the issue's sizes, or CI sizes that run in seconds."""
    if ci:
        return {
            "transformer_step": ["--layers", "1", "--height", "64", "--width", "64", "--frames", "9", "--repeat", "1"],
            "vae_decode": ["--config", "tiny", "--height", "64", "--width", "64", "--frames", "9"],
            "end_to_end": [
                "--size",
                "tiny",
                "--height",
                "64",
                "--width",
                "96",
                "--frames",
                "9",
                "--dtype",
                dtype,
                "-r1",
            ],
            "fp8_quality": ["--size", "tiny", "--height", "64", "--width", "96", "--frames", "9"],
        }
    return {
        "transformer_step": ["--layers", str(layers), "--height", "480", "--width", "704", "--frames", "97"],
        "vae_decode": ["--height", "480", "--width", "704", "--frames", "97"],
        "end_to_end": ["--height", "320", "--width", "512", "--frames", "49", "--dtype", dtype, "-r3"],
        "fp8_quality": ["--height", "320", "--width", "512", "--frames", "49"],
    }


def _lookup(results: dict, path: tuple[str, ...]) -> float | None:
    node: object = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, int | float) else None


def summary_rows(results: dict) -> list[tuple[str, float | None, Target | None]]:
    """(what, value, its target or None) for the table: the targets first, then the other ratios of each part."""
    rows: list[tuple[str, float | None, Target | None]] = [(t.name, _lookup(results, t.path), t) for t in TARGETS]
    step = results.get("transformer_step", {})
    for dtype in ("float32", "bfloat16"):
        row = step.get(dtype, {})
        for other in ("reference", "diffusers"):
            if f"ltxv_over_{other}" in row:
                rows.append((f"(a) {dtype} step time, ltxv / {other}", row[f"ltxv_over_{other}"], None))
        if "ltxv" in row:
            rows.append((f"(a) {dtype} ltxv fraction of matmul peak", row["ltxv"]["fraction_of_peak"], None))
    for name, r in results.get("vae_decode", {}).get("ratios", {}).items():
        rows.append((f"(b) decode time, {name}", r["seconds"], None))
        rows.append((f"(b) decode working memory, {name}", r["working_memory"], None))
    e2e = results.get("end_to_end", {})
    for key, label in (("generate_seconds", "generate time"), ("total_seconds", "wall time"), ("peak_rss", "peak RSS")):
        value = _lookup(e2e, ("ltxv_over_diffusers", key))
        if value is not None:
            rows.append((f"(c) end-to-end {label}, ltxv / diffusers", value, None))
    for name in ("fp8-scaled", "fp8-cast"):
        value = _lookup(results, ("fp8_quality", name, "psnr_db_vs_bf16"))
        if value is not None:
            rows.append((f"(d) {name} PSNR vs bf16, dB", value, None))
    return rows


def print_summary(results: dict) -> None:
    print("\nsummary (ratios: below 1 means ltxv is faster / smaller)")
    print(f"  {'measure':58s} {'value':>7s} {'target':>8s}  result")
    for name, value, t in summary_rows(results):
        shown = "-" if value is None else f"{value:.3g}"
        bound = "" if t is None else f"{'>=' if t.at_least else '<='} {t.limit:g}"
        verdict = "" if t is None else ("n/a" if value is None else ("pass" if t.met(value) else "FAIL"))
        print(f"  {name:58s} {shown:>7s} {bound:>8s}  {verdict}")
    for part in PARTS:
        r = results.get(part, {})
        if "error" in r or "skipped" in r:
            print(f"  {part}: {r.get('skipped') or r['error'].strip().splitlines()[-1]}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ci", action="store_true", help="tiny sizes (a smoke run; the numbers mean nothing)")
    p.add_argument("--layers", type=int, default=2, help="(a): transformer blocks in the step (FLOP/s extrapolate)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="(c): default bfloat16 as the reference config")
    p.add_argument("--parts", nargs="+", choices=list("abcd"), default=list("abcd"))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    # CI runs fp32: bf16 on a CPU is slow and the smoke run only keeps the code paths alive.
    dtype = a.dtype or ("float32" if a.ci else "bfloat16")
    args = part_args(a.ci, a.layers, dtype)
    results: dict = {"ci": a.ci, "command": sys.argv if argv is None else ["run.py", *argv]}
    # The heavy real-size decodes (b) run last: after them the file cache is cold for whoever runs next.
    for letter, part in sorted(zip("abcd", PARTS, strict=True), key=lambda lp: lp[0] == "b"):
        if letter not in a.parts:
            continue
        if importlib.util.find_spec(part) is None:
            results[part] = {"skipped": f"benchmarks/{part}.py is not there"}
            continue
        print(f"\n== ({letter}) {part} {' '.join(args[part])}", flush=True)
        t0 = time.perf_counter()
        try:
            results[part] = importlib.import_module(part).main(args[part])
        except Exception:  # one broken part must not lose the others' numbers
            results[part] = {"error": traceback.format_exc()[-3000:]}
        results[part]["wall_seconds"] = time.perf_counter() - t0
    results["targets"] = [
        {
            "name": t.name,
            "value": (v := _lookup(results, t.path)),
            "limit": t.limit,
            "at_least": t.at_least,
            "path": list(t.path),
            "pass": None if v is None else t.met(v),
        }
        for t in TARGETS
    ]
    print_summary(results)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
