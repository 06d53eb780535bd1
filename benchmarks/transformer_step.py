"""One transformer step, ltxv vs the reference ``Transformer3DModel``, same random weights, same inputs, one run.

Part (a) of the performance benchmark (issue 4): the real 2B block shape (32 x 64 heads, D = 2048) at a given
resolution, with ``--layers`` blocks (FLOP/s extrapolate to 28). Prints per implementation and dtype: wall time (best of
``--repeat``), achieved matmul FLOP/s against a matmul peak measured in the same run, and the ltxv/reference ratio;
writes the same as JSON.

    python benchmarks/transformer_step.py --layers 2 --height 480 --width 704 --frames 97 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from measure import matmul_peak, timed

from ltxv.config import TRANSFORMER_2B, TransformerConfig
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.testing.random_weights import random_state_dict


def step_flops(cfg: TransformerConfig, n_tokens: int, n_text: int) -> float:
    """Matmul FLOPs of one forward: per block q/k/v/out (4 D^2 N), attention (2 N^2 D x 2), cross-attention
    (2 D^2 N + 2 D^2 L + 2 N L D x 2), feed-forward (8 D^2 N x 2); 2 FLOPs per multiply-add."""
    d, n, el = cfg.inner_dim, n_tokens, n_text
    per_block = 2 * (4 * d * d * n + 2 * n * n * d + 2 * d * d * n + 2 * d * d * el + 2 * n * el * d + 8 * d * d * n)
    return cfg.num_layers * per_block + 2 * n * d * (cfg.in_channels + cfg.out_channels)


def _inputs(cfg: TransformerConfig, f: int, h: int, w: int, n_text: int, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    n = f * h * w
    pos = pixel_positions(latent_grid(f, h, w, 1), causal_fix=True, frame_rate=25.0)
    mask = torch.ones(1, n_text, dtype=torch.int64)
    mask[:, n_text // 2 :] = 0
    return {
        "tokens": torch.randn(1, n, cfg.in_channels, generator=g, dtype=dtype),
        "positions": pos,
        "timesteps": torch.full((1,), 0.7),
        "context": torch.randn(1, n_text, cfg.caption_channels, generator=g, dtype=dtype),
        "context_mask": mask,
    }


def run(layers: int, height: int, width: int, frames: int, n_text: int, repeat: int, dtypes: list[str]) -> dict:
    cfg = dataclasses.replace(TRANSFORMER_2B, num_layers=layers)
    f, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    with torch.device("meta"):
        sd_model = Transformer(cfg)
    sd = random_state_dict(sd_model, seed=0)
    flops = step_flops(cfg, f * h * w, n_text)
    results: dict = {"config": {"layers": layers, "tokens": f * h * w, "text_tokens": n_text, "flops": flops}}
    for name in dtypes:
        dtype = getattr(torch, name)
        peak = matmul_peak(dtype)
        x = _inputs(cfg, f, h, w, n_text, dtype)
        ours = Transformer(cfg)
        ours.load_state_dict(sd)
        ours = ours.to(dtype).eval()
        impls = {
            "ltxv": lambda m=ours, x=x: m(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"])
        }
        try:
            from ltx_video.models.transformers.transformer3d import Transformer3DModel

            ref = Transformer3DModel.from_config(cfg.to_dict())
            ref.load_state_dict(sd)
            ref = ref.to(dtype).eval()
            impls["reference"] = lambda m=ref, x=x: m(
                x["tokens"],
                indices_grid=x["positions"],
                encoder_hidden_states=x["context"],
                timestep=x["timesteps"][:, None],
                encoder_attention_mask=x["context_mask"],
                return_dict=False,
            )
        except ImportError:
            pass
        row: dict = {"matmul_peak_flops": peak}
        with torch.inference_mode():
            for impl, fn in impls.items():
                fn()  # warm-up
                best = min(timed(fn) for _ in range(repeat))
                row[impl] = {"seconds": best, "flops_per_s": flops / best, "fraction_of_peak": flops / best / peak}
        if "reference" in row:
            row["ltxv_over_reference"] = row["ltxv"]["seconds"] / row["reference"]["seconds"]
        results[name] = row
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=704)
    p.add_argument("--frames", type=int, default=97)
    p.add_argument("--text-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    res = run(a.layers, a.height, a.width, a.frames, a.text_tokens, a.repeat, a.dtypes)
    c = res["config"]
    print(f"transformer step: {c['layers']} layers, {c['tokens']} tokens, {c['flops'] / 1e12:.2f} TFLOP")
    for name in a.dtypes:
        row = res[name]
        print(f"  {name}: matmul peak {row['matmul_peak_flops'] / 1e9:.0f} GFLOP/s")
        for impl in ("ltxv", "reference"):
            if impl in row:
                r = row[impl]
                print(
                    f"    {impl:9s} {r['seconds']:8.3f} s  {r['flops_per_s'] / 1e9:7.1f} GFLOP/s  {100 * r['fraction_of_peak']:5.1f}% of peak"
                )
        if "ltxv_over_reference" in row:
            print(f"    ltxv / reference time: {row['ltxv_over_reference']:.2f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
