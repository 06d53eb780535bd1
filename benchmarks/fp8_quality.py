"""FP8 weights: the quality cost against bf16 (PSNR of the decoded video, same seed) and the memory saved.

Part of the performance benchmark (issue 4). One mid-sized random model in the official single-file format (as in
``end_to_end``) generates the same distilled multi-scale request three times with ltxv:

* ``bf16``: every weight in bfloat16 (the reference);
* ``fp8-scaled``: the bf16 file quantised at load (``quantize="fp8"``: per-tensor absmax scale per linear);
* ``fp8-cast``: the official ``-fp8`` layout, the block linears stored as plain float8_e4m3fn casts (no scale).

On a CPU, or a GPU without fp8 tensor cores, the fp8 linears upcast their weight per matmul (weight-only fp8), so the
PSNR is the cost of the weight rounding alone; on sm89+ ``torch._scaled_mm`` also quantises activations. Also prints
the transformer weight bytes fp8 / bf16 for this model and for the real 2B and 13B shapes (built on the meta device).

    python benchmarks/fp8_quality.py --height 320 --width 512 --frames 49 --json fp8.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from end_to_end import PROMPT, recipe, write_model
from measure import add_video_size
from safetensors import safe_open
from safetensors.torch import save_file

from ltxv.config import TRANSFORMER_2B, TRANSFORMER_13B
from ltxv.model.transformer import Transformer
from ltxv.quant.fp8 import FP8, is_fp8_linear_name, module_bytes, swap_to_fp8

_PREFIX = "model.diffusion_model."


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two videos in [0, 1]; inf when equal."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def write_cast_copy(src: str, dst: Path) -> Path:
    """The checkpoint with the block linears' weights cast to float8_e4m3fn, as Lightricks' -fp8 files store them."""
    with safe_open(src, "pt") as f:
        metadata = f.metadata()
        tensors = {}
        for k in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
            t = f.get_tensor(k)
            name = k.removeprefix(_PREFIX).removesuffix(".weight")
            quantised = k.startswith(_PREFIX) and k.endswith(".weight") and is_fp8_linear_name(name)
            tensors[k] = t.to(torch.bfloat16).to(FP8) if quantised else t
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def shape_ratio(cfg) -> float:
    """Transformer weight bytes, fp8 (scaled) / bf16, at a config's real shape (meta device, nothing allocated)."""
    with torch.device("meta"):
        bf16 = Transformer(cfg).to(torch.bfloat16)
        fp8 = swap_to_fp8(Transformer(cfg).to(torch.bfloat16), scaled=True)
    return module_bytes(fp8) / module_bytes(bf16)


def run(height: int, width: int, frames: int, size: str, seed: int) -> dict:
    import ltxv
    from ltxv.pipelines.request import GenerationRequest

    request = GenerationRequest(PROMPT, height=height, width=width, num_frames=frames, seed=seed, recipe=recipe(None))
    with tempfile.TemporaryDirectory() as tmp:
        kit = write_model(Path(tmp), size, dtype=torch.bfloat16)
        cast = write_cast_copy(kit["checkpoint"], Path(tmp) / "cast-fp8.safetensors")
        variants = {
            "bf16": (kit["checkpoint"], None),
            "fp8-scaled": (kit["checkpoint"], "fp8"),
            "fp8-cast": (str(cast), None),
        }
        videos, weights = {}, {}
        for name, (ckpt, quantize) in variants.items():
            pipe = ltxv.load(
                ckpt,
                upsampler=kit["upsampler"],
                text_encoder=kit["text_encoder"],
                dtype=torch.bfloat16,
                quantize=quantize,
            )
            weights[name] = module_bytes(pipe.models.transformer)
            videos[name] = pipe.generate(request).video
            del pipe
    out: dict = {"config": {"height": height, "width": width, "frames": frames, "model": size, "seed": seed}}
    for name in ("fp8-scaled", "fp8-cast"):
        out[name] = {
            "psnr_db_vs_bf16": psnr(videos[name], videos["bf16"]),
            "transformer_weight_bytes": weights[name],
            "weight_ratio_vs_bf16": weights[name] / weights["bf16"],
        }
    out["bf16"] = {"transformer_weight_bytes": weights["bf16"]}
    out["real_shape_weight_ratio"] = {"2B": shape_ratio(TRANSFORMER_2B), "13B": shape_ratio(TRANSFORMER_13B)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (320, 512, 49))
    p.add_argument("--size", choices=["mid", "tiny"], default="mid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(a.height, a.width, a.frames, a.size, a.seed)
    print(f"fp8 vs bf16 ({a.size} model, {a.width}x{a.height}x{a.frames}, seed {a.seed}):")
    for name in ("fp8-scaled", "fp8-cast"):
        r = res[name]
        print(
            f"  {name:10s} PSNR {r['psnr_db_vs_bf16']:6.2f} dB   transformer weights x{r['weight_ratio_vs_bf16']:.3f}"
        )
    shapes = res["real_shape_weight_ratio"]
    print(f"  transformer weights fp8 / bf16 at the real shapes: 2B x{shapes['2B']:.3f}, 13B x{shapes['13B']:.3f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
