"""The hybrid 13B+2B schedule's denoising time against 13B alone and 2B alone, at the real transformer shapes.

The 2B (28 x 2048) and 13B (48 x 4096) transformers are built from their real configs with random weights and
``--layers`` blocks only; at each pass's token count of the distilled multi-scale recipe (7 steps at the first pass's
size, 3 at twice it) the embedding + output head and the blocks are timed apart, and a step is extrapolated to the
full depth as ``embed_head + depth x per_block`` (the text side and RoPE tables are prepared once per pass, as the
denoiser caches them), the way ``transformer_step.py`` extrapolates its FLOP/s. The
schedules' times are then the sums over their steps (``ltxv.pipelines.hybrid.resolve``): denoising only, the VAE,
T5 and upsampler are the same for all three. Each model runs in its own process.

    python benchmarks/hybrid.py --height 512 --width 768 --frames 121 --layers 2 --json hybrid.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from measure import add_video_size, run_isolated, timed

from ltxv.config import TRANSFORMER_2B, TRANSFORMER_13B
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.pipelines.hybrid import default_schedule, parse_schedule, resolve
from ltxv.testing.random_weights import random_state_dict

CONFIGS = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B}
DOWNSCALE = 0.6666666  # the distilled multi-scale recipe's first pass
PASS_STEPS = (7, 3)


def pass_grids(height: int, width: int, frames: int) -> list[tuple[int, int, int]]:
    """Latent (f, h, w) of the two passes, sized as ``Pipeline.pass_sizes`` sizes them."""
    h1, w1 = int(height * DOWNSCALE) // 32 * 32, int(width * DOWNSCALE) // 32 * 32
    f = (frames - 1) // 8 + 1
    return [(f, h1 // 32, w1 // 32), (f, 2 * h1 // 32, 2 * w1 // 32)]


def measure_model(name: str, layers: int, grids: list[list[int]], n_text: int, dtype: str, repeat: int) -> dict:
    """Seconds of one denoising step per pass grid: the model with ``layers`` blocks, its text side and RoPE tables
    prepared once (the denoiser caches them per pass), then the embedding + head and the blocks timed apart (best of
    ``repeat`` after a warm-up) and the blocks extrapolated to the model's depth."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    full = CONFIGS[name]
    cfg = dataclasses.replace(full, num_layers=layers)
    with torch.device("meta"):
        meta = Transformer(cfg)
    model = Transformer(cfg)
    model.load_state_dict(random_state_dict(meta, seed=0))
    model = model.to(dt).eval()
    out: dict = {"passes": []}
    g = torch.Generator().manual_seed(0)
    context = torch.randn(1, n_text, full.caption_channels, generator=g, dtype=dt)
    with torch.inference_mode():
        text = model.prepare_text(context, torch.ones(1, n_text, dtype=torch.int64))
        for f, h, w in grids:
            n = f * h * w
            tokens = torch.randn(1, n, full.in_channels, generator=g, dtype=dt)
            rope = model.rope(pixel_positions(latent_grid(f, h, w, 1), causal_fix=True, frame_rate=24.0), dt)
            x, modulation, embedded = model.embed(tokens, torch.full((1,), 0.7))

            def ends(tokens: torch.Tensor = tokens, x: torch.Tensor = x, embedded: torch.Tensor = embedded) -> object:
                model.embed(tokens, torch.full((1,), 0.7))
                return model.head(x.clone(), embedded)

            def blocks(x: torch.Tensor = x, modulation: torch.Tensor = modulation, rope: tuple = rope) -> object:
                return model.run_blocks(x.clone(), text, modulation, rope)

            times = {}
            for part, fn in (("embed_head", ends), ("blocks", blocks)):
                fn()  # warm-up
                times[part] = min(timed(fn) for _ in range(repeat))
            per_block = times["blocks"] / layers
            step = times["embed_head"] + full.num_layers * per_block
            out["passes"].append({"tokens": n, "measured": times, "per_block": per_block, "step_seconds": step})
    return out


def run(height: int, width: int, frames: int, layers: int, n_text: int, dtype: str, repeat: int, schedule: str | None):
    grids = pass_grids(height, width, frames)
    kwargs = {"layers": layers, "grids": grids, "n_text": n_text, "dtype": dtype, "repeat": repeat}
    models = {name: run_isolated("hybrid", "measure_model", {"name": name, **kwargs}) for name in CONFIGS}
    step = {name: [p["step_seconds"] for p in r["passes"]] for name, r in models.items()}
    plans = {
        "13b alone": [["13b"] * n for n in PASS_STEPS],
        "2b alone": [["2b"] * n for n in PASS_STEPS],
        "hybrid default": resolve(
            default_schedule({"2b": 2048, "13b": 4096}, PASS_STEPS[0]), PASS_STEPS, ["2b", "13b"]
        ),
    }
    if schedule:
        plans[f"hybrid {schedule}"] = resolve(parse_schedule(schedule), PASS_STEPS, ["2b", "13b"])
    totals = {k: sum(step[label][i] for i, labels in enumerate(plan) for label in labels) for k, plan in plans.items()}
    return {
        "config": {
            "height": height,
            "width": width,
            "frames": frames,
            "grids": grids,
            "dtype": dtype,
            "layers": layers,
        },
        "models": models,
        "schedules": {k: {"steps": plans[k], "seconds": totals[k]} for k in plans},
        "ratios": {
            f"{k} / {base}": totals[k] / totals[base]
            for k in totals
            if k.startswith("hybrid")
            for base in ("13b alone", "2b alone")
        },
    }


def print_report(res: dict) -> None:
    c = res["config"]
    print(f"hybrid: {c['width']}x{c['height']}x{c['frames']}, {c['dtype']}, passes {c['grids']} (latent f, h, w)")
    for name, r in res["models"].items():
        steps = ", ".join(f"{p['tokens']} tokens {p['step_seconds']:.2f} s/step" for p in r["passes"])
        print(f"  {name}: {steps} (extrapolated from {c['layers']} blocks)")
    for k, s in res["schedules"].items():
        runs = " | ".join(" ".join(x.removesuffix("b") for x in p) for p in s["steps"])
        print(f"  {k:<22} {s['seconds']:8.1f} s  [{runs}]")
    for k, v in res["ratios"].items():
        print(f"  {k}: {v:.2f}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (256, 384, 49))
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--text-tokens", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--schedule", help='another schedule to price, e.g. "13b:2,2b"')
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(a.height, a.width, a.frames, a.layers, a.text_tokens, a.dtype, a.repeat, a.schedule)
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
