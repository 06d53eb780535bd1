"""Where one bfloat16 transformer step goes: ltxv's forward at the real 2B block shape under ``torch.profiler``, the
CPU time grouped into the linear layers, the attention kernel and everything else (norms, modulation, RoPE, GELU,
copies), each with its FLOP/s against the matmul peak measured in the same run; and the attention kernel alone in
float32 and bfloat16 at the step's shape, which says whether it uses the bf16 dot products at all.

    python benchmarks/step_profile.py --layers 1 --height 480 --width 704 --frames 97 --json prof.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from measure import add_video_size, matmul_peak, timed
from torch.profiler import ProfilerActivity, profile
from transformer_step import _inputs, step_flops

from ltxv.config import TRANSFORMER_2B
from ltxv.model.transformer import Transformer
from ltxv.runtime import capability
from ltxv.testing.random_weights import random_state_dict

LINEAR = ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul")
ATTENTION = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")


def attention_rate(n: int, heads: int, head_dim: int, dtype: torch.dtype, repeat: int = 3) -> float:
    """FLOP/s of SDPA on (1, heads, n, head_dim) self-attention (4 n^2 d per head: q k^T and the weighted sum)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, head_dim, generator=g).to(dtype) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v)
    best = min(timed(lambda: F.scaled_dot_product_attention(q, k, v)) for _ in range(repeat))
    return 4 * n * n * head_dim * heads / best


def run(layers: int, height: int, width: int, frames: int, n_text: int, repeat: int) -> dict:
    cfg = dataclasses.replace(TRANSFORMER_2B, num_layers=layers)
    dtype = torch.bfloat16
    f, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    n = f * h * w
    model = Transformer(cfg)
    model.load_state_dict(random_state_dict(model, 0, dtype))
    model = model.to(dtype).eval()
    x = _inputs(cfg, f, h, w, n_text, dtype)
    d = cfg.inner_dim

    def step() -> object:
        return model(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"])

    with torch.inference_mode():
        step()  # warm-up
        seconds = min(timed(step) for _ in range(repeat))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    peak = matmul_peak(dtype)
    groups = {"linear": 0.0, "attention": 0.0, "other": 0.0}
    ops: dict[str, float] = {}
    for e in prof.key_averages():
        t = e.self_cpu_time_total / 1e6
        group = "linear" if e.key in LINEAR else "attention" if e.key in ATTENTION else "other"
        groups[group] += t
        ops[e.key] = t
    total = sum(groups.values())
    # Matmul FLOPs by kind (per block): projections and MLP 2 (4 + 2 + 8) D^2 N, text keys/values 2 x 2 D^2 L;
    # self-attention 4 N^2 D; cross-attention 4 N L D.
    linear_flops = layers * (2 * 14 * d * d * n + 4 * d * d * n_text)
    attention_flops = layers * (4 * n * n * d + 4 * n * n_text * d)
    flops = step_flops(cfg, n, n_text)
    with torch.inference_mode():
        sdpa = {
            str(dt): attention_rate(n, cfg.num_attention_heads, cfg.attention_head_dim, dt)
            for dt in (torch.float32, dtype)
        }
    return {
        "config": {"layers": layers, "tokens": n, "text_tokens": n_text, "cpu": capability.cpu_model()},
        "seconds": seconds,
        "fraction_of_peak": flops / seconds / peak,
        "matmul_peak_flops": peak,
        "profiled_seconds": total,
        "groups": {k: {"seconds": v, "share": v / total} for k, v in groups.items()},
        "linear_flops_per_s": linear_flops / groups["linear"] if groups["linear"] else None,
        "attention_flops_per_s": attention_flops / groups["attention"] if groups["attention"] else None,
        "sdpa_flops_per_s": sdpa,
        "top_other": dict(
            sorted(((k, v) for k, v in ops.items() if k not in LINEAR + ATTENTION), key=lambda kv: -kv[1])[:8]
        ),
    }


def print_report(r: dict) -> None:
    c = r["config"]
    peak = r["matmul_peak_flops"]
    print(
        f"bf16 step, {c['layers']} block(s) of the 2B shape, {c['tokens']} tokens, CPU {c['cpu']}: {r['seconds']:.2f} s,"
        f" {100 * r['fraction_of_peak']:.0f}% of the bf16 matmul peak ({peak / 1e9:.0f} GFLOP/s)"
    )
    for name, g in r["groups"].items():
        rate = r.get(f"{name}_flops_per_s")
        extra = f", {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of peak" if rate else ""
        print(f"  {name:9s} {g['seconds']:6.2f} s  {100 * g['share']:4.0f}%{extra}")
    s = r["sdpa_flops_per_s"]
    print("  SDPA alone: " + ", ".join(f"{k.removeprefix('torch.')} {v / 1e9:.0f} GFLOP/s" for k, v in s.items()))
    print("  other, by op: " + ", ".join(f"{k.removeprefix('aten::')} {v:.2f} s" for k, v in r["top_other"].items()))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=1)
    add_video_size(p, (480, 704, 97))
    p.add_argument("--text-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    r = run(a.layers, a.height, a.width, a.frames, a.text_tokens, a.repeat)
    print_report(r)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
