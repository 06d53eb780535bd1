"""Switching LoRA sets in a warm pipeline against reloading the checkpoint, at the real 2B transformer shape.

A single-file checkpoint with the real 2B transformer (28 x 2048, random weights, stored in bf16 like the released
files; a tiny VAE, which is not what is measured) and two random LoRAs at its shapes: A as the Trainer writes by
default (rank 64 on the attention linears, ``to_q/k/v/to_out.0`` of ``attn1`` and ``attn2``), B as the IC-LoRA
config (rank 128, the feed-forward linears too). Each measurement runs in a fresh process (``measure.run_isolated``):

- reload: ``load_pipeline(checkpoint)``, best of ``--repeat``, and ``load_pipeline(checkpoint, loras=X)`` for X = A,
  B: what switching by reloading costs (the file was just written, so it is in the page cache: the cheapest a reload
  can be);
- switch: one warm pipeline, ``set_loras`` through A, B, A + B, nothing, ..., each transition timed; the first
  application of each set also reads its file and keeps the base copies of the linears it touches.

A warm switch into X costs X's merge (its matmuls, ``2 r`` FLOPs per weight it touches) plus restoring what the old
set touched; a reload with X costs reading the checkpoint plus the same merge. On a CPU the merge dominates for large
ranks (B: 480 GFLOP at the 2B shape); on a GPU it is a few milliseconds.

    python benchmarks/lora_switch.py --json lora_switch.json
    python benchmarks/lora_switch.py --layers 1 --heads 2 --rank-a 4 --rank-b 8 --repeat 1   # CI size
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from measure import gib, peak_rss, run_isolated

from ltxv.config import TRANSFORMER_2B, TransformerConfig
from ltxv.lora import linear_shapes
from ltxv.model.transformer import Transformer
from ltxv.testing.checkpoints import write_single_file
from ltxv.testing.configs import TINY_VAE
from ltxv.testing.loras import IC_LORA_TARGETS, TRAINER_TARGETS, block_targets, random_factors, write_lora
from ltxv.testing.text import write_tiny_text_encoder

# (label, set): the first visit of A and of B also reads the file and makes the base copies.
SEQUENCE = ("A", "B", "A", "B", "A+B", "none", "A", "none", "B", "A")


def config(layers: int, heads: int) -> TransformerConfig:
    d = heads * TRANSFORMER_2B.attention_head_dim
    return dataclasses.replace(
        TRANSFORMER_2B, num_layers=layers, num_attention_heads=heads, cross_attention_dim=d, caption_channels=d
    )


def write(folder: str, layers: int, heads: int, dtype: str, rank_a: int, rank_b: int) -> dict:
    """The checkpoint (this transformer, a tiny VAE), a tiny T5 and the two LoRAs; their paths."""
    cfg, out, dt = config(layers, heads), Path(folder), getattr(torch, dtype)
    ckpt = write_single_file(out / "ltxv-2b-random.safetensors", cfg, TINY_VAE, dtype=dt)
    text = write_tiny_text_encoder(out / "t5", d_model=cfg.caption_channels)
    with torch.device("meta"):
        shapes = linear_shapes(Transformer(cfg))
    a = random_factors(shapes, block_targets(shapes, TRAINER_TARGETS), rank_a, seed=1, dtype=dt)
    b = random_factors(shapes, block_targets(shapes, IC_LORA_TARGETS), rank_b, seed=2, dtype=dt)
    loras = {"A": write_lora(out / "a.safetensors", a), "B": write_lora(out / "b.safetensors", b)}
    return {"checkpoint": str(ckpt), "text_encoder": str(text), "loras": {k: str(v) for k, v in loras.items()}}


def reload(checkpoint: str, text_encoder: str, dtype: str, lora: str | None = None) -> dict:
    from ltxv.pipelines.generate import load_pipeline

    t0 = time.perf_counter()
    load_pipeline(
        checkpoint, text_encoder=text_encoder, dtype=getattr(torch, dtype), loras=[(lora, 1.0)] if lora else ()
    )
    return {"seconds": time.perf_counter() - t0, "peak_rss": peak_rss()}


def switch(checkpoint: str, text_encoder: str, dtype: str, loras: dict[str, str]) -> dict:
    from ltxv.pipelines.generate import load_pipeline

    pipe = load_pipeline(checkpoint, text_encoder=text_encoder, dtype=getattr(torch, dtype))
    sets = {"A": [(loras["A"], 1.0)], "B": [(loras["B"], 0.8)], "A+B": [(loras["A"], 0.5), (loras["B"], 0.5)]}
    sets["none"] = []
    steps = []
    previous = "none"
    for label in SEQUENCE:
        t0 = time.perf_counter()
        pipe.set_loras(sets[label])
        steps.append({"from": previous, "to": label, "seconds": time.perf_counter() - t0})
        previous = label
    base = sum(b.weight.nbytes + (0 if b.scale is None else b.scale.nbytes) for b in pipe.lora._base.values())
    return {"steps": steps, "base_copy_bytes": base, "peak_rss": peak_rss()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=TRANSFORMER_2B.num_layers)
    p.add_argument("--heads", type=int, default=TRANSFORMER_2B.num_attention_heads, help="of 64 channels each")
    p.add_argument("--rank-a", type=int, default=64)
    p.add_argument("--rank-b", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--repeat", type=int, default=2, help="reloads timed (best kept)")
    p.add_argument("--dir", help="where to write the checkpoint and LoRAs (default: a temporary folder)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    cfg = config(a.layers, a.heads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.dir or tmp)
        t0 = time.perf_counter()
        # Written by a child process, so this one stays small while the measured ones run.
        files = run_isolated(
            "lora_switch",
            "write",
            {
                "folder": str(folder),
                "layers": a.layers,
                "heads": a.heads,
                "dtype": a.dtype,
                "rank_a": a.rank_a,
                "rank_b": a.rank_b,
            },
        )
        ckpt, text, loras = (
            Path(files["checkpoint"]),
            files["text_encoder"],
            {k: Path(v) for k, v in files["loras"].items()},
        )
        written = time.perf_counter() - t0
        args = {"checkpoint": str(ckpt), "text_encoder": text, "dtype": a.dtype}
        reloads = [run_isolated("lora_switch", "reload", args) for _ in range(a.repeat)]
        with_lora = {k: run_isolated("lora_switch", "reload", {**args, "lora": str(v)}) for k, v in loras.items()}
        switched = run_isolated("lora_switch", "switch", {**args, "loras": {k: str(v) for k, v in loras.items()}})
        sizes = {k: v.stat().st_size for k, v in loras.items()} | {"checkpoint": ckpt.stat().st_size}
    reload_s = min(r["seconds"] for r in reloads)
    steps = switched["steps"]
    warm = [s["seconds"] for s in steps[2:]]  # both files read and every base copy made
    into = {k: statistics.median(s["seconds"] for s in steps[2:] if s["to"] == k) for k in ("A", "B")}
    res = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "config": {
            "layers": a.layers,
            "width": cfg.inner_dim,
            "dtype": a.dtype,
            "rank_a": a.rank_a,
            "rank_b": a.rank_b,
        },
        "file_bytes": sizes,
        "setup_seconds": written,
        "reload_seconds": reload_s,
        "reload_all": [r["seconds"] for r in reloads],
        "reload_peak_rss": max(r["peak_rss"] for r in reloads),
        "switch_steps": steps,
        "switch_warm_median_seconds": statistics.median(warm),
        "switch_warm_max_seconds": max(warm),
        "switch_peak_rss": switched["peak_rss"],
        "base_copy_bytes": switched["base_copy_bytes"],
        "warm_switch_over_reload": statistics.median(warm) / reload_s,
        "reload_with_lora_seconds": {k: v["seconds"] for k, v in with_lora.items()},
        "warm_switch_into_seconds": into,
        "warm_switch_over_reload_with_lora": {k: into[k] / with_lora[k]["seconds"] for k in into},
    }
    print(f"{res['cpu']}, {res['threads']} threads; {a.layers} x {cfg.inner_dim} transformer in {a.dtype}")
    print(f"reload the checkpoint ({gib(sizes['checkpoint'])}): {reload_s:.2f} s (best of {a.repeat})")
    for k, v in with_lora.items():
        print(f"reload with {k} merged: {v['seconds']:.2f} s; a warm switch into {k}: {into[k]:.2f} s (median)")
    for s in steps:
        print(f"  set_loras {s['from']:>4} -> {s['to']:<4} {s['seconds']:7.3f} s")
    print(
        f"warm switch: median {res['switch_warm_median_seconds']:.3f} s, max {res['switch_warm_max_seconds']:.3f} s "
        f"= {res['warm_switch_over_reload']:.3f} x a reload; base copies {gib(res['base_copy_bytes'])}, "
        f"peak RSS {gib(res['switch_peak_rss'])} (reload {gib(res['reload_peak_rss'])})"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
