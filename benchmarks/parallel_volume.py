"""Sequence parallelism's communication per denoising step: the closed form at the real 2B and 13B shapes, checked
against the bytes a measured 2-rank gloo run on this CPU moved.

Closed form (:mod:`ltxv.parallel.volume`): bytes sent between ranks per transformer call, all ranks together, for the
released widths and depths (2B: 28 x 2048, 13B: 48 x 4096), clip sizes from 704x480x97 to 1216x704x257, 1 row
(distilled, CFG off) or 3 (dev: uncond, cond, STG-perturbed), 2/4/8 ranks, bf16, Ulysses and the ring.

Measured: the real block (32 heads, width 2048 or 4096, real text and RoPE layout) with ``--layers`` blocks on a
token count the ranks do not divide, 2 gloo ranks of one thread each; every byte each rank's collectives sent is
counted and the sum must equal the closed form exactly. The same run reports the split call's largest difference to
the plain call (fp32) and its wall time against the plain call in one process with two threads (the same two cores).

    python benchmarks/parallel_volume.py --json parallel.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ltxv.config import TRANSFORMER_2B, TRANSFORMER_13B, TransformerConfig
from ltxv.model.attention import SkipLayerStrategy
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.parallel.attention import CommStats
from ltxv.parallel.launch import run_local
from ltxv.parallel.sequence import SequenceParallel
from ltxv.parallel.volume import call_volume
from ltxv.pipelines.denoise import TransformerCall
from ltxv.testing.random_weights import random_state_dict

MODELS = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B}
CLIPS = ((704, 480, 97), (1216, 704, 121), (1216, 704, 257))  # width x height x frames
N_TEXT = 128


def clip_tokens(width: int, height: int, frames: int) -> int:
    return ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)


def closed_form(element_bytes: int = 2) -> list[dict]:
    rows = []
    for name, cfg in MODELS.items():
        for clip in CLIPS:
            n = clip_tokens(*clip)
            for branches in (1, 3):
                for ranks in (2, 4, 8):
                    for mode in ("ulysses", "ring"):
                        v = call_volume(
                            rows=branches,
                            tokens=n,
                            width=cfg.inner_dim,
                            layers=cfg.num_layers,
                            out_channels=cfg.out_channels,
                            ranks=ranks,
                            mode=mode,
                            element_bytes=element_bytes,
                        )
                        rows.append(
                            {
                                "model": name,
                                "clip": "x".join(map(str, clip)),
                                "tokens": n,
                                "branches": branches,
                                "ranks": ranks,
                                "mode": mode,
                                "bytes_per_step": v.total,
                                "bytes_per_rank_per_step": v.total // ranks,
                                "gather_bytes": v.gather,
                            }
                        )
    return rows


def _call(cfg: TransformerConfig, grid: tuple[int, int, int], rows: int, dtype: torch.dtype) -> TransformerCall:
    """A dev-style guided call (rows 3: uncond, cond, perturbed with STG in block 0) on random weights."""
    m = Transformer(cfg).eval()
    m.load_state_dict(random_state_dict(m, 0, dtype))
    g = torch.Generator().manual_seed(0)
    f, h, w = grid
    n = f * h * w
    text = m.prepare_text(torch.randn(rows, N_TEXT, cfg.caption_channels, generator=g, dtype=dtype), None)
    mask = torch.ones(cfg.num_layers, rows)
    mask[0, -1] = 0
    return TransformerCall(
        step=0,
        label="main",
        model=m,
        tokens=torch.randn(rows, n, cfg.in_channels, generator=g, dtype=dtype),
        timesteps=torch.full((rows, 1), 0.7),
        text=text,
        rope=m.rope(pixel_positions(latent_grid(f, h, w, 1), causal_fix=True, frame_rate=25.0)),
        skip_mask=mask.to(dtype),
        skip_strategy=SkipLayerStrategy.ATTENTION_VALUES,
        branches=("uncond", "cond", "perturbed")[-rows:],
        batch=1,
    )


def _split_rank(group: dist.ProcessGroup, cfg: TransformerConfig, grid: tuple[int, int, int], rows: int) -> dict:
    with torch.inference_mode():
        call = _call(cfg, grid, rows, torch.float32)
        plain = call.run()
        stats = CommStats()
        sp = SequenceParallel(group, stats=stats)
        dist.barrier(group)
        t0 = time.perf_counter()
        got = sp(call)
        seconds = time.perf_counter() - t0
    return {"sent": dict(stats.sent), "seconds": seconds, "max_abs_diff": float((got - plain).abs().max())}


def measure(name: str, layers: int, grid: tuple[int, int, int], rows: int) -> dict:
    cfg = dataclasses.replace(MODELS[name], num_layers=layers)
    ranks = run_local(_split_rank, 2, cfg, grid, rows, threads=1, timeout=1800)
    torch.set_num_threads(2)
    with torch.inference_mode():
        call = _call(cfg, grid, rows, torch.float32)
        call.run()  # warm-up
        t0 = time.perf_counter()
        call.run()
        plain_seconds = time.perf_counter() - t0
    n = grid[0] * grid[1] * grid[2]
    v = call_volume(
        rows=rows,
        tokens=n,
        width=cfg.inner_dim,
        layers=layers,
        out_channels=cfg.out_channels,
        ranks=2,
        mode="ulysses",
        element_bytes=4,
    )
    measured = sum(sum(r["sent"].values()) for r in ranks)
    split_seconds = max(r["seconds"] for r in ranks)
    return {
        "model": name,
        "layers": layers,
        "tokens": n,
        "rows": rows,
        "measured_bytes": measured,
        "closed_form_bytes": v.total,
        "equal": measured == v.total,
        "per_rank": [r["sent"] for r in ranks],
        "max_abs_diff_vs_plain": max(r["max_abs_diff"] for r in ranks),
        "split_seconds": split_seconds,
        "plain_seconds_2_threads": plain_seconds,
        "split_over_plain": split_seconds / plain_seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs=2, default=(2, 1), help="blocks of the measured 2B and 13B runs")
    p.add_argument("--grid", type=int, nargs=3, default=(3, 7, 11), help="latent frames, rows, columns measured")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args(argv)
    table = closed_form()
    measured = [measure(name, layers, tuple(a.grid), a.rows) for name, layers in zip(MODELS, a.layers)]
    print(f"{'model':>5} {'clip':>13} {'tokens':>6} {'rows':>4} {'P':>2} {'mode':>7} {'GB/step':>8} {'GB/rank':>8}")
    for r in table:
        print(
            f"{r['model']:>5} {r['clip']:>13} {r['tokens']:>6} {r['branches']:>4} {r['ranks']:>2} {r['mode']:>7} "
            f"{r['bytes_per_step'] / 1e9:>8.2f} {r['bytes_per_rank_per_step'] / 1e9:>8.2f}"
        )
    for m in measured:
        print(
            f"measured {m['model']} ({m['layers']} blocks, {m['tokens']} tokens, {m['rows']} rows, fp32, 2 ranks): "
            f"{m['measured_bytes']} bytes, closed form {m['closed_form_bytes']} -> "
            f"{'equal' if m['equal'] else 'DIFFERENT'}; max |split - plain| {m['max_abs_diff_vs_plain']:.2e}; "
            f"split {m['split_seconds']:.2f} s vs plain {m['plain_seconds_2_threads']:.2f} s"
        )
    result = {"closed_form_bf16": table, "measured_fp32": measured}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
