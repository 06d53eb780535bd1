"""Measure the shipped ``ltxv-demo`` model (the numbers in its MODEL_CARD.md) and draw the README's frame strip.

    python training/measure_demo.py        # 60 text-to-video + 15 image-to-video cases -> measurements.json, the strip
    python training/measure_demo.py --cases 30 --i2v 5 --no-strip --json /tmp/m.json

Every clip is generated through the public API with the preset's recipe, written as an mp4, read back and measured
with :mod:`ltxv.testing.scenes` (colour, motion, shape; frame-0 PSNR for image-to-video). The multi-scale recipe is
also compared with one pass at its first-pass size (64x64, decoded and upscaled bilinearly): edge sharpness.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import ltxv
from ltxv.pipelines.presets import DEMO_DIR, DEMO_PRESET, get_preset, pipeline_args
from ltxv.pipelines.request import Recipe
from ltxv.testing import scenes as S
from ltxv.testing import semantic as sem

sys.path.insert(0, str(Path(__file__).parent))
import demo_model as dm

STRIP_PROMPTS = (
    "a red circle moving right",
    "a cyan square moving up",
    "a yellow triangle moving left",
    "a magenta circle moves down",
    "a white square standing still",
)
STRIP_FRAMES = (0, 6, 12, 18, 24)
DEFAULT_STRIP = Path(__file__).resolve().parents[1] / "docs" / "ltxv-demo-strip.png"


def one_pass_low(recipe: Recipe) -> Recipe:
    """The recipe's first pass alone (a base recipe), for generating at the first pass's size."""
    return replace(recipe, pipeline_type="base", second_pass=None)


def sharpness_comparison(pipe: ltxv.Pipeline, recipe: Recipe, cases: list[sem.Case]) -> dict[str, float]:
    h, w, f = sem.SIZE
    multi, low = [], []
    for case in cases:
        multi.append(S.sharpness(pipe.generate(sem.request(case, recipe)).video))
        small = pipe.generate(sem.request(case, one_pass_low(recipe), (h // 2, w // 2, f))).video  # (F, h, w, 3)
        up = F.interpolate(small.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
        low.append(S.sharpness(up.permute(0, 2, 3, 1).clamp(0, 1)))
    return {"multi_scale": statistics.mean(multi), "one_pass_64_upscaled": statistics.mean(low)}


def strip(pipe: ltxv.Pipeline, recipe: Recipe, path: Path, seed: int = 7) -> Path:
    """Rows of frames, one row per prompt, the prompt written above it."""
    from PIL import Image, ImageDraw

    h, w, _ = sem.SIZE
    gap, label = 4, 16
    rows = []
    for i, prompt in enumerate(STRIP_PROMPTS):
        case = sem.Case("circle", "red", "left", seed + i)  # only the seed is used; the prompt is given below
        video = pipe.generate(replace(sem.request(case, recipe), prompt=prompt)).video  # type: ignore[arg-type]
        rows.append((prompt, [(video[k] * 255).round().to(torch.uint8).numpy() for k in STRIP_FRAMES]))
    width = len(STRIP_FRAMES) * (w + gap) + gap
    image = Image.new("RGB", (width, len(rows) * (h + label + gap) + gap), (24, 24, 24))
    draw = ImageDraw.Draw(image)
    for r, (prompt, frames) in enumerate(rows):
        top = gap + r * (h + label + gap)
        draw.text((gap, top + 2), f'"{prompt}"  (frames {", ".join(map(str, STRIP_FRAMES))})', fill=(230, 230, 230))
        for k, frame in enumerate(frames):
            image.paste(Image.fromarray(frame), (gap + k * (w + gap), top + label))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=60, help="text-to-video cases")
    p.add_argument("--i2v", type=int, default=15, help="image-to-video cases")
    p.add_argument("--sharpness-cases", type=int, default=10)
    p.add_argument("--strip", type=Path, default=DEFAULT_STRIP)
    p.add_argument("--no-strip", action="store_true")
    p.add_argument("--json", type=Path, default=DEMO_DIR / "measurements.json", help="where the numbers go")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    recipe = get_preset(DEMO_PRESET)
    pipe = ltxv.load(**pipeline_args(recipe, dtype="float32", device="cpu"))
    t0 = time.perf_counter()
    t2v = [sem.run_case(pipe, c, recipe) for c in sem.spread(a.cases)]
    t2v_s = (time.perf_counter() - t0) / max(a.cases, 1)
    i2v = [sem.run_i2v_case(pipe, c, recipe) for c in sem.spread(a.i2v, first_seed=5000)]
    results = {
        "cpu": dm.cpu_model(),
        "threads": a.threads,
        "t2v_cases": a.cases,
        "t2v": sem.score(t2v),
        "seconds_per_t2v_clip": round(t2v_s, 2),
        "i2v_cases": a.i2v,
        "i2v": sem.score(i2v),
        "i2v_frame0_psnr_min": min((o.frame0_psnr or 0.0) for o in i2v) if i2v else None,
        "i2v_frame0_psnr_mean": statistics.mean(o.frame0_psnr or 0.0 for o in i2v) if i2v else None,
        "sharpness": sharpness_comparison(pipe, recipe, sem.spread(a.sharpness_cases, first_seed=9000)),
        "failures": [
            {"prompt": o.case.prompt, "seed": o.case.seed, "colour": o.colour, "motion": o.motion, "shape": o.shape}
            for o in t2v + i2v
            if not all(o.ok.values())
        ],
    }
    print(json.dumps(results, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1) + "\n")
    if not a.no_strip:
        print(f"wrote {strip(pipe, recipe, a.strip)}")


if __name__ == "__main__":
    main()
