"""One transformer step, ltxv vs the reference ``Transformer3DModel`` vs diffusers' ``LTXVideoTransformer3DModel``: the
same random weights and inputs, each implementation in its own process, in one run.

Part (a) of the performance benchmark (issue 4): the real 2B block shape (32 x 64 heads, D = 2048) at a given
resolution, with ``--layers`` blocks (FLOP/s extrapolate to 28). Prints per dtype and implementation: wall time (best
of ``--repeat`` after one warm-up), achieved matmul FLOP/s against a matmul peak measured in the same run, the
process's peak RSS, and the ratios ltxv/reference and ltxv/diffusers; writes the same as JSON.

    python benchmarks/transformer_step.py --layers 2 --height 480 --width 704 --frames 97 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from measure import Stages, add_video_size, gib, matmul_peak, peak_rss, run_isolated, timed

from ltxv.config import TRANSFORMER_2B, TransformerConfig
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.testing.random_weights import random_state_dict

IMPLEMENTATIONS = ("ltxv", "reference", "diffusers")


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


def _build(impl: str, cfg: TransformerConfig, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    if impl == "ltxv":
        model = Transformer(cfg)
        model.load_state_dict(sd)
        return model.eval()
    if impl == "reference":
        from ltx_video.models.transformers.transformer3d import Transformer3DModel

        model = Transformer3DModel.from_config(cfg.to_dict())
        model.load_state_dict(sd)
        return model.eval()
    if impl == "diffusers":
        from diffusers_port import diffusers_transformer

        return diffusers_transformer(sd, cfg)
    raise ValueError(f"unknown implementation {impl!r}; known: {IMPLEMENTATIONS}")


def _step(impl: str, model: torch.nn.Module, x: dict) -> Callable[[], object]:
    """One forward with the implementation's calling convention, on the same inputs."""
    if impl == "ltxv":
        return lambda: model(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"])
    if impl == "reference":
        return lambda: model(
            x["tokens"],
            indices_grid=x["positions"],
            encoder_hidden_states=x["context"],
            timestep=x["timesteps"][:, None],
            encoder_attention_mask=x["context_mask"],
            return_dict=False,
        )
    return lambda: model(  # diffusers: timesteps scaled by 1000 outside the model, positions as video_coords
        hidden_states=x["tokens"],
        encoder_hidden_states=x["context"],
        timestep=x["timesteps"] * 1000,
        encoder_attention_mask=x["context_mask"],
        video_coords=x["positions"],
        return_dict=False,
    )


def measure_impl(
    impl: str, layers: int, height: int, width: int, frames: int, n_text: int, repeat: int, dtypes: list[str]
) -> dict:
    """Run in a fresh process (``measure.run_isolated``): build ``impl`` with the seeded weights, then per dtype one
    warm-up and the best of ``repeat`` steps. Returns seconds per dtype, per-stage time and peak RSS, process peak."""
    torch.manual_seed(0)
    import_peak = peak_rss()
    cfg = dataclasses.replace(TRANSFORMER_2B, num_layers=layers)
    f, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    stages = Stages()
    with stages.stage("load"):
        with torch.device("meta"):
            shapes = Transformer(cfg)
        sd = random_state_dict(shapes, seed=0)
        model = _build(impl, cfg, sd)
        del sd
    seconds = {}
    with torch.inference_mode():
        for name in dtypes:
            with stages.stage(name):
                dtype = getattr(torch, name)
                model = model.to(dtype)
                step = _step(impl, model, _inputs(cfg, f, h, w, n_text, dtype))
                step()  # warm-up
                seconds[name] = min(timed(step) for _ in range(repeat))
    peak = max([import_peak] + [s.peak_rss for s in stages.stages.values()])
    return {"seconds": seconds, "stages": stages.to_dict(), "peak_rss": peak}


def available(impl: str) -> bool:
    import importlib.util

    module = {"ltxv": "ltxv", "reference": "ltx_video", "diffusers": "diffusers"}[impl]
    return importlib.util.find_spec(module) is not None


def run(
    layers: int,
    height: int,
    width: int,
    frames: int,
    n_text: int,
    repeat: int,
    dtypes: list[str],
    impls: tuple[str, ...] = IMPLEMENTATIONS,
) -> dict:
    cfg = dataclasses.replace(TRANSFORMER_2B, num_layers=layers)
    n_tokens = ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)
    flops = step_flops(cfg, n_tokens, n_text)
    results: dict = {"config": {"layers": layers, "tokens": n_tokens, "text_tokens": n_text, "flops": flops}}
    peaks = {name: matmul_peak(getattr(torch, name)) for name in dtypes}
    kwargs = {
        "layers": layers,
        "height": height,
        "width": width,
        "frames": frames,
        "n_text": n_text,
        "repeat": repeat,
        "dtypes": dtypes,
    }
    runs = {}
    for impl in impls:
        try:
            runs[impl] = run_isolated("transformer_step", "measure_impl", {"impl": impl, **kwargs})
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # one failing column must not lose the others
            runs[impl] = {"error": str(e)[-3000:]}
    results["processes"] = runs
    for name in dtypes:
        row: dict = {"matmul_peak_flops": peaks[name]}
        for impl, r in runs.items():
            if "error" in r:
                continue
            s = r["seconds"][name]
            row[impl] = {
                "seconds": s,
                "flops_per_s": flops / s,
                "fraction_of_peak": flops / s / peaks[name],
                "peak_rss": r["stages"][name]["peak_rss"],
                "working_memory": r["stages"][name]["working_memory"],
            }
        for other in ("reference", "diffusers"):
            if other in row and "ltxv" in row:
                row[f"ltxv_over_{other}"] = row["ltxv"]["seconds"] / row[other]["seconds"]
        results[name] = row
    return results


def print_report(res: dict) -> None:
    c = res["config"]
    print(f"transformer step: {c['layers']} layers, {c['tokens']} tokens, {c['flops'] / 1e12:.2f} TFLOP")
    for impl, r in res["processes"].items():
        if "error" in r:
            print(f"  {impl} failed: {r['error'].strip().splitlines()[-1]}")
    for name, row in res.items():
        if name in ("config", "processes"):
            continue
        print(f"  {name}: matmul peak {row['matmul_peak_flops'] / 1e9:.0f} GFLOP/s")
        for impl in IMPLEMENTATIONS:
            if impl in row:
                r = row[impl]
                print(
                    f"    {impl:9s} {r['seconds']:8.3f} s  {r['flops_per_s'] / 1e9:7.1f} GFLOP/s"
                    f"  {100 * r['fraction_of_peak']:5.1f}% of peak  peak RSS {gib(r['peak_rss'])}"
                )
        for other in ("reference", "diffusers"):
            if f"ltxv_over_{other}" in row:
                print(f"    ltxv / {other} time: {row[f'ltxv_over_{other}']:.2f}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    add_video_size(p, (480, 704, 97))
    p.add_argument("--text-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--impls", nargs="+", default=[i for i in IMPLEMENTATIONS if available(i)], choices=IMPLEMENTATIONS)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    res = run(a.layers, a.height, a.width, a.frames, a.text_tokens, a.repeat, a.dtypes, tuple(a.impls))
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
