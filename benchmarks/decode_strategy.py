"""The row of ``ltxv.runtime.fastpath.STREAM_SLOWDOWN`` for this machine: streamed / one-shot VAE decode time.

The mid-sized benchmark VAE of ``end_to_end.py`` (the 0.9.5+ layout at base width 32, random weights) decodes the same
normalised latents of 384x640x49 in one shot and streamed one latent frame at a time, in float32 and bfloat16; the
two are interleaved (one shot, streamed, one shot, ...) and the best of ``--repeat`` each is kept, so a busy machine
inflates both alike. Prints the device class, each time, the ratio, and the lines to put in the table.

    python benchmarks/decode_strategy.py --repeat 3 --json ds.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from end_to_end import model_configs
from measure import add_video_size, timed
from vae_decode import latents

from ltxv.model.vae import VideoVAE
from ltxv.runtime import capability
from ltxv.runtime.fastpath import device_class, stream_slowdown
from ltxv.testing.random_weights import random_state_dict


def measure(height: int, width: int, frames: int, dtype: torch.dtype, repeat: int) -> dict:
    _, cfg, _ = model_configs("mid")
    vae = VideoVAE(cfg).eval()
    vae.load_state_dict(random_state_dict(vae, 0, torch.float32))
    vae = vae.to(dtype)
    z = latents(cfg, height, width, frames, dtype)
    t = torch.full((1,), 0.05)
    times: dict[str, list[float]] = {"one_shot": [], "streamed": []}
    with torch.inference_mode():
        vae.decode(z[:, :, :2], t, chunk_frames=None)  # warm-up: library initialisation stays out
        for _ in range(repeat):
            times["one_shot"].append(timed(lambda: vae.decode(z, t, chunk_frames=None)))
            times["streamed"].append(timed(lambda: vae.decode(z, t, chunk_frames=1)))
    best = {k: min(v) for k, v in times.items()}
    return {"seconds": times, "best": best, "slowdown": best["streamed"] / best["one_shot"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (384, 640, 49))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    cls = device_class("cpu")
    res: dict = {"cpu": capability.cpu_model(), "device_class": cls, "threads": torch.get_num_threads(), "rows": {}}
    print(f"{res['cpu']} ({cls}, {res['threads']} threads), mid VAE {a.width}x{a.height}x{a.frames}")
    for name in a.dtypes:
        dtype = getattr(torch, name)
        r = res["rows"][name] = measure(a.height, a.width, a.frames, dtype, a.repeat)
        b = r["best"]
        print(f"  {name}: one shot {b['one_shot']:.2f} s, streamed {b['streamed']:.2f} s -> x{r['slowdown']:.2f}")
        print(f"    table: ({cls!r}, {name!r}): {r['slowdown']:.1f},  (now {stream_slowdown('cpu', dtype)})")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
