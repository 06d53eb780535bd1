"""VAE decode: ltxv one-shot, ltxv streaming, the reference and diffusers, same random weights, same latents.

Part (b) of the performance benchmark (issue 4): the real-size 0.9.5 decoder (``VAE_0_9_5``) decoding normalised
latents with the decode timestep 0.05. Each implementation runs in its own process (``measure.run_isolated``) so its
RSS is its own; per implementation: wall time, RSS just before the decode, peak RSS during it, working memory (the
peak minus the RSS before: weights and latents excluded); the ratios ltxv/reference and ltxv/diffusers; max |diff| of
ltxv streaming vs ltxv one-shot and of each implementation vs the reference. Prints a table and writes JSON.

    python benchmarks/vae_decode.py --height 480 --width 704 --frames 97 --json out.json

Only the decoder's weights (and the latent statistics) are materialised: the encoders stay on the meta device.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from measure import Stages, add_video_size, gib, run_isolated
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ltxv.config import VAE_0_9_5, VAEConfig
from ltxv.model.vae import VideoVAE
from ltxv.testing.configs import TINY_VAE, scaled_vae
from ltxv.testing.random_weights import random_state_dict

# "tiny": the 0.9.5 layout, one resnet per stage and narrow (for CI; diffusers can express it).
CONFIGS = {
    "0.9.5": VAE_0_9_5,
    "tiny": scaled_vae(8, layers=1, latent_channels=TINY_VAE.latent_channels),
}
IMPLS = ("ltxv_oneshot", "ltxv_stream", "reference", "diffusers")
DECODE_TIMESTEP = 0.05


def decoder_state_dict(cfg: VAEConfig, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random decoder weights and latent statistics under the full model's key names (``decoder.*``,
    ``per_channel_statistics.*``), equal to those keys of ``random_state_dict(VideoVAE(cfg), seed)``."""
    with torch.device("meta"):
        vae = VideoVAE(cfg)
    holder = nn.Module()  # the two sub-modules under their own names: same keys, no encoder weights generated
    holder.decoder, holder.per_channel_statistics = vae.decoder, vae.per_channel_statistics
    return random_state_dict(holder, seed, dtype)


def latent_shape(cfg: VAEConfig, height: int, width: int, frames: int) -> tuple[int, ...]:
    """(1, C, F', H', W') for a video of ``frames`` x ``height`` x ``width``."""
    s, ts = cfg.spatial_compression, cfg.temporal_compression
    if (frames - 1) % ts or height % s or width % s:
        raise ValueError(f"{frames} frames at {height}x{width}: need {ts}k+1 frames and sizes multiples of {s}")
    return (1, cfg.latent_channels, (frames - 1) // ts + 1, height // s, width // s)


def latents(cfg: VAEConfig, height: int, width: int, frames: int, dtype: torch.dtype) -> torch.Tensor:
    """Seeded normalised latents (1, C, F', H', W')."""
    shape = latent_shape(cfg, height, width, frames)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)


def decode_flops(cfg: VAEConfig, height: int, width: int, frames: int) -> int:
    """FLOPs of the one-shot decode (convolutions and matmuls), counted on the meta device."""
    with torch.device("meta"):
        vae = VideoVAE(cfg)
        z = torch.empty(latent_shape(cfg, height, width, frames))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            vae.decode(z, torch.full((1,), DECODE_TIMESTEP), chunk_frames=None)
    return counter.get_total_flops()


def _build(
    impl: str, cfg: VAEConfig, sd: dict[str, torch.Tensor], dtype: torch.dtype
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The implementation's decode as a callable of normalised latents."""
    t = torch.full((1,), DECODE_TIMESTEP)
    mean, std = sd["per_channel_statistics.mean-of-means"], sd["per_channel_statistics.std-of-means"]
    if impl.startswith("ltxv"):
        with torch.device("meta"):
            vae = VideoVAE(cfg)
        missing, unexpected = vae.load_state_dict(sd, strict=False, assign=True)
        assert not unexpected and all(k.startswith("encoder.") for k in missing)
        vae = vae.eval()
        chunk = 1 if impl == "ltxv_stream" else None
        return lambda z: vae.decode(z, t, chunk_frames=chunk)
    if impl == "reference":
        from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
        from ltx_video.models.autoencoders.vae_encode import vae_decode

        with torch.device("meta"):
            ref = CausalVideoAutoencoder.from_config(cfg.to_dict())
        ref.decoder.to_empty(device="cpu")
        ref.load_state_dict(sd, strict=False)  # its own loader: registers the statistics as buffers
        ref = ref.to(dtype).eval()
        return lambda z: vae_decode(z, ref, is_video=True, vae_per_channel_normalize=True, timestep=t)
    if impl == "diffusers":
        import diffusers_port  # written separately; absent or NotImplementedError -> the column is skipped

        with torch.device("meta"):  # its loader wants every key: the encoder's as meta tensors (assigned, unused)
            encoder = {"encoder." + k: v.to(dtype) for k, v in VideoVAE(cfg).encoder.state_dict().items()}
        dvae = diffusers_port.diffusers_vae(encoder | sd, cfg).to(dtype).eval()
        # The diffusers pipeline's denormalisation, with our statistics (scaling factor 1).
        return lambda z: dvae.decode(z * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1), t, return_dict=False)[0]
    raise ValueError(f"unknown implementation {impl!r}")


def decode_one(
    impl: str, config: str, height: int, width: int, frames: int, dtype: str, output: str | None = None
) -> dict:
    """One implementation's decode, meant to run in a fresh process: timing and memory of the decode alone; the video
    is written to ``output`` (safetensors) for the comparison."""
    dt = getattr(torch, dtype)
    cfg = CONFIGS[config]
    sd = decoder_state_dict(cfg, dt)
    try:
        fn = _build(impl, cfg, sd, dt)
    except (ImportError, NotImplementedError) as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    del sd
    z = latents(cfg, height, width, frames, dt)
    with torch.no_grad():
        fn(z[:, :, :1])  # warm-up on one latent frame: library initialisation stays out of the measurement
    stages = Stages()
    with torch.no_grad(), stages.stage("decode"):
        video = fn(z)  # (1, 3, F, H, W)
    if output:
        save_file({"video": video.contiguous()}, output)
    return {**stages.to_dict()["decode"], "shape": list(video.shape)}


def run(config: str, height: int, width: int, frames: int, dtype: str, impls: tuple[str, ...] = IMPLS) -> dict:
    cfg = CONFIGS[config]
    res: dict = {
        "config": {"vae": config, "height": height, "width": width, "frames": frames, "dtype": dtype},
        "flops": decode_flops(cfg, height, width, frames),
        "implementations": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for impl in impls:
            path = str(Path(tmp) / f"{impl}.safetensors")
            r = run_isolated(
                "vae_decode",
                "decode_one",
                {
                    "impl": impl,
                    "config": config,
                    "height": height,
                    "width": width,
                    "frames": frames,
                    "dtype": dtype,
                    "output": path,
                },
            )
            res["implementations"][impl] = r
            if "skipped" not in r:
                outputs[impl] = path
        res["max_abs_diff"] = _diffs(outputs)
    rows = {k: v for k, v in res["implementations"].items() if "skipped" not in v}
    ratios = {}
    for ours in ("ltxv_stream", "ltxv_oneshot"):
        for other in ("reference", "diffusers"):
            if ours in rows and other in rows:
                a, b = rows[ours], rows[other]
                ratios[f"{ours}/{other}"] = {
                    "seconds": a["seconds"] / b["seconds"],
                    "working_memory": a["working_memory"] / max(b["working_memory"], 1),
                }
    res["ratios"] = ratios
    return res


def _diffs(outputs: dict[str, str]) -> dict[str, float]:
    pairs = [("ltxv_stream", "ltxv_oneshot"), ("ltxv_stream", "reference"), ("ltxv_oneshot", "reference")]
    pairs += [("diffusers", "reference")]
    out = {}
    for a, b in pairs:
        if a in outputs and b in outputs:
            x, y = load_file(outputs[a])["video"].float(), load_file(outputs[b])["video"].float()
            out[f"{a} vs {b}"] = (x - y).abs().max().item()
            del x, y
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (480, 704, 97))
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--config", choices=list(CONFIGS), default="0.9.5", help="'tiny' for a CI-sized check")
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(a.config, a.height, a.width, a.frames, a.dtype, tuple(a.impls))
    print(f"VAE decode {a.config} {a.width}x{a.height}x{a.frames} {a.dtype}: {res['flops'] / 1e12:.2f} TFLOP")
    print(f"  {'implementation':14s} {'seconds':>9s} {'rss before':>12s} {'peak':>12s} {'working mem':>12s}")
    for impl, r in res["implementations"].items():
        if "skipped" in r:
            print(f"  {impl:14s} skipped ({r['skipped']})")
            continue
        print(
            f"  {impl:14s} {r['seconds']:9.2f} {gib(r['rss_before']):>12s} {gib(r['peak_rss']):>12s}"
            f" {gib(r['working_memory']):>12s}"
        )
    for name, r in res["ratios"].items():
        print(f"  {name}: time x{r['seconds']:.2f}, working memory x{r['working_memory']:.3f}")
    for name, d in res["max_abs_diff"].items():
        print(f"  max |diff| {name}: {d:.3g}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
