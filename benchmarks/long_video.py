"""Long video: time per second of video and peak memory against length, ltxv vs diffusers' LTXI2VLongMultiPromptPipeline
on the same random weights, each run in a fresh process.

One random model is written once (the ``end_to_end`` benchmark's ``tiny`` or ``mid`` set, the 0.9.5+ VAE layout that
diffusers' converter maps); then for every length:

* ltxv: ``Pipeline.generate`` of the long request (windows of 80 frames overlapping by 24, 8 distilled steps, an
  image at frame 0), its frames streamed into ``Mp4Writer``: the mp4 is the output, no video-sized tensor exists;
* ltxv-assembled (the longest length only): the same without a frame consumer, the whole float video returned, as a
  control that the streamed run's flat memory is not an artefact of the measurement;
* diffusers: the same windows, sigmas, seed and image, its networks converted from the same file
  (``diffusers_port``) and our T5's embeddings injected, decoded whole (``output_type="pt"``, one spatial tile: its
  decode has no temporal tiling), as its pipeline does.

The longest ltxv mp4 is read back frame by frame for seams and drift: the largest frame-to-frame change where a window's
frames take over against the largest elsewhere, and the distance between the first and the last second's mean colour.

Peak RSS is the process's high-water mark (imports and load included), so a run's peak is its own. Time per second of
video = wall time of generate (+ write) / (frames / fps).

    python benchmarks/long_video.py --height 128 --width 192 --lengths 361 1441 --json long.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from end_to_end import model_configs, write_model
from measure import gib, peak_rss, run_isolated

SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
PROMPT = "A red fox runs through fresh snow | The fox stops and looks at the camera"
FPS = 24.0


def _request(height: int, width: int, frames: int, seed: int = 0) -> Any:
    from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, PassSettings, Recipe

    recipe = Recipe(
        first_pass=PassSettings(timesteps=SIGMAS, guidance_scale=1.0, stg_scale=0.0, rescaling_scale=1.0),
        decode_timestep=0.05,
        decode_noise_scale=0.025,
    )
    return GenerationRequest(
        PROMPT,
        negative_prompt="",
        height=height,
        width=width,
        num_frames=frames,
        frame_rate=FPS,
        seed=seed,
        recipe=recipe,
        temporal_tile_frames=80,
        conditioning=(ConditioningMedia(_image(height, width) * 2 - 1, 0, 1.0),),
    )


def _image(height: int, width: int) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))  # in [0, 1]


def measure_ltxv(kit: dict, height: int, width: int, frames: int, out: str, stream: bool = True) -> dict:
    from ltxv.io.video import Mp4Writer
    from ltxv.pipelines.generate import load_pipeline

    torch.set_num_threads(torch.get_num_threads())
    pipe = load_pipeline(kit["checkpoint"], text_encoder=kit["text_encoder"])
    req = _request(height, width, frames)
    t0 = time.perf_counter()
    if stream:
        with Mp4Writer(out, FPS) as writer:
            pipe.generate(req, frames=writer.write)
    else:
        video = pipe.generate(req).video
        assert video is not None and video.shape[0] == frames
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "seconds_per_video_second": seconds / (frames / FPS), "peak_rss": peak_rss()}


def measure_diffusers(kit: dict, height: int, width: int, frames: int, size: str) -> dict:
    import diffusers_port
    from diffusers import LTXEulerAncestralRFScheduler
    from diffusers.pipelines.ltx.pipeline_ltx_i2v_long_multi_prompt import LTXI2VLongMultiPromptPipeline
    from safetensors.torch import load_file

    from ltxv.pipelines.stages import encode_text
    from ltxv.text.t5 import TextEncoder

    transformer_cfg, vae_cfg, _ = model_configs(size)
    sd = load_file(kit["checkpoint"])
    pipe = LTXI2VLongMultiPromptPipeline(
        scheduler=LTXEulerAncestralRFScheduler(),
        vae=diffusers_port.diffusers_vae({k: v for k, v in sd.items() if k.startswith("vae.")}, vae_cfg),
        text_encoder=None,
        tokenizer=None,
        transformer=diffusers_port.diffusers_transformer(
            {k: v for k, v in sd.items() if k.startswith("model.")}, transformer_cfg
        ),
    )
    del sd
    t5 = TextEncoder.from_pretrained(kit["text_encoder"])

    def encode_prompt(prompt: list[str], negative_prompt: str | None = None, **_: Any) -> tuple:
        t = encode_text(t5, prompt[0], negative_prompt or "")
        return t.positive, t.positive_mask, t.negative, t.negative_mask

    pipe.encode_prompt = encode_prompt
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        video = pipe(
            prompt=PROMPT,
            height=height,
            width=width,
            num_frames=frames,
            frame_rate=FPS,
            sigmas=[*SIGMAS, 0.0],
            seed=0,
            cond_image=_image(height, width)[None],
            cond_strength=1.0,
            decode_horizontal_tiles=1,
            decode_vertical_tiles=1,
            output_type="pt",
        ).frames
    seconds = time.perf_counter() - t0
    assert video.shape[2] == frames
    return {"seconds": seconds, "seconds_per_video_second": seconds / (frames / FPS), "peak_rss": peak_rss()}


def frame_stats(path: str) -> dict[str, list]:
    """Read an mp4 frame by frame (nothing but per-frame numbers kept): the mean absolute change from the previous
    frame and the mean RGB of each frame, in [0, 1]."""
    import av
    import numpy as np

    diffs, colours, prev = [], [], None
    with av.open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            x = frame.to_ndarray(format="rgb24").astype(np.float32) / 255
            colours.append(x.reshape(-1, 3).mean(0).tolist())
            if prev is not None:
                diffs.append(float(np.abs(x - prev).mean()))
            prev = x
    return {"diffs": diffs, "colours": colours}


def seams(stats: dict[str, list], windows: list[tuple[int, int]], overlap: int, fps: float) -> dict[str, float]:
    """Frame-to-frame change where a window's frames take over (pixel frames ``8 a .. 8 (a + overlap)`` of every
    later window starting at latent frame ``a``) against the change elsewhere, and the colour drift: the distance of
    the mean RGB of the last second from the first's. No seam: ``boundary_max <= within_max``."""
    import statistics

    diffs = stats["diffs"]  # diffs[i]: frame i -> i + 1
    zones = [range(8 * a, min(8 * (a + overlap), len(diffs))) for a, _ in windows[1:]]
    at = {i for z in zones for i in z}
    inside = [d for i, d in enumerate(diffs) if i not in at]
    boundary = [diffs[i] for i in sorted(at)]
    n = max(1, round(fps))
    first, last = (torch.tensor(stats["colours"][part]).mean(0) for part in (slice(0, n), slice(-n, None)))
    return {
        "boundary_max": max(boundary, default=0.0),
        "within_max": max(inside, default=0.0),
        "within_median": statistics.median(inside) if inside else 0.0,
        "colour_drift": float((first - last).norm()),
    }


def run(
    size: str, height: int, width: int, lengths: list[int], diffusers_lengths: list[int], folder: Path
) -> dict[str, Any]:
    kit = write_model(folder, size)
    res: dict[str, Any] = {"size": size, "height": height, "width": width, "fps": FPS, "ltxv": {}, "diffusers": {}}
    for n in lengths:
        out = str(folder / f"ltxv-{n}.mp4")
        res["ltxv"][n] = run_isolated(
            "long_video", "measure_ltxv", {"kit": kit, "height": height, "width": width, "frames": n, "out": out}
        )
    longest = max(lengths)
    from ltxv.conditioning.window import temporal_windows

    windows = temporal_windows((longest - 1) // 8 + 1, 80 // 8, 24 // 8)  # the request's windows
    res["seams"] = seams(frame_stats(str(folder / f"ltxv-{longest}.mp4")), windows, 3, FPS)
    res["ltxv_assembled"] = {
        longest: run_isolated(
            "long_video",
            "measure_ltxv",
            {"kit": kit, "height": height, "width": width, "frames": longest, "out": "", "stream": False},
        )
    }
    for n in diffusers_lengths:
        args = {"kit": kit, "height": height, "width": width, "frames": n, "size": size}
        try:
            res["diffusers"][n] = run_isolated("long_video", "measure_diffusers", args)
        except RuntimeError as e:  # e.g. killed for memory
            res["diffusers"][n] = {"error": str(e).splitlines()[0]}
    shortest = min(lengths)
    res["ltxv_peak_ratio_longest_over_shortest"] = res["ltxv"][longest]["peak_rss"] / res["ltxv"][shortest]["peak_rss"]
    return res


def print_report(res: dict) -> None:
    print(f"long video, {res['size']} model, {res['width']}x{res['height']} at {res['fps']:g} fps")
    print(f"{'frames':>7} {'impl':<16} {'seconds':>9} {'s per video s':>14} {'peak RSS':>11}")
    rows = [("ltxv", res["ltxv"]), ("ltxv-assembled", res["ltxv_assembled"]), ("diffusers", res["diffusers"])]
    for name, runs in rows:
        for n, r in sorted(runs.items(), key=lambda kv: int(kv[0])):
            if "error" in r:
                print(f"{n:>7} {name:<16} {r['error']}")
                continue
            print(
                f"{n:>7} {name:<16} {r['seconds']:9.1f} {r['seconds_per_video_second']:14.2f} {gib(r['peak_rss']):>11}"
            )
    print(f"ltxv peak RSS, longest / shortest: {res['ltxv_peak_ratio_longest_over_shortest']:.3f}")
    sm = res["seams"]
    print(
        f"frame-to-frame change at window boundaries max {sm['boundary_max']:.4f}, elsewhere max "
        f"{sm['within_max']:.4f} (median {sm['within_median']:.4f}); colour drift first -> last second "
        f"{sm['colour_drift']:.4f} (random weights: noise, meaningful on a trained model)"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=["tiny", "mid"], default="tiny")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--lengths", type=int, nargs="+", default=[361, 1441])
    p.add_argument("--diffusers-lengths", type=int, nargs="*", default=None, help="default: --lengths")
    p.add_argument("--json")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(
            a.size,
            a.height,
            a.width,
            a.lengths,
            a.lengths if a.diffusers_lengths is None else a.diffusers_lengths,
            Path(tmp),
        )
    print_report(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
