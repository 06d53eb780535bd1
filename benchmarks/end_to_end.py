"""The distilled multi-scale recipe end to end on a mid-sized random model: ltxv vs the reference vs diffusers.

Part (c) of the performance benchmark (issue 4). One random model is written once, in the official single-file format
(transformer + VAE with their config in the metadata, a latent upsampler file, a tiny T5 folder); then each
implementation loads it and generates the same request in its own process:

* ltxv: ``ltxv.load(...)`` and ``Pipeline.generate`` with the ``ltxv-2b-0.9.8-distilled`` preset;
* the reference: ``create_ltx_video_pipeline`` / ``create_latent_upsampler`` / ``LTXMultiScalePipeline``, as its
  ``inference.py`` builds and calls them;
* diffusers: ``LTXConditionPipeline`` + ``LTXLatentUpsamplePipeline`` in the documented three-call recipe, the models
  converted from the same files by ``diffusers_port``.

Per implementation: wall time per stage (load, text, pass1, upsample, pass2, decode; a model call inside a pass is
counted in its own stage, not the pass), the transformer's share and number of calls, and peak RSS (the process's
high-water mark, imports included); then the ratios ltxv/reference and ltxv/diffusers. The total is load + generate;
the import of the libraries is timed too but left out of it.

    python benchmarks/end_to_end.py --height 320 --width 512 --frames 49 --json e2e.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from measure import PhaseClock, Stages, add_video_size, gib, peak_rss, run_isolated

from ltxv.config import TRANSFORMER_2B, UPSAMPLER_SPATIAL, TransformerConfig, UpsamplerConfig, VAEConfig
from ltxv.pipelines.presets import get_preset
from ltxv.pipelines.request import DEFAULT_NEGATIVE_PROMPT, PassSettings, Recipe
from ltxv.testing.configs import TINY_2B, TINY_CAPTION_CHANNELS, TINY_UPSAMPLER, scaled_vae

IMPLEMENTATIONS = ("ltxv", "reference", "diffusers")
PRESET = "ltxv-2b-0.9.8-distilled"
PROMPT = "A red fox runs through fresh snow in a quiet forest at dawn, the camera tracking it slowly from the side."
STAGES = ("import", "load", "text", "pass1", "upsample", "pass2", "decode")
NOTES = {
    "reference": [
        "VAE and T5 run in bfloat16 whatever the precision: inference.py casts them so",
        "the upsampler runs in float32 (inference.py leaves it so)",
    ],
    "diffusers": [
        "pass 2 re-noises via denoise_strength with 1000 prepended to the reference's timesteps (the documented way)",
        "no STG and no per-step guidance lists in LTXConditionPipeline (the distilled recipe uses neither)",
        "CFG rescale is guidance_rescale (diffusers' formula), set to the recipe's rescaling_scale",
        "scheduler: FlowMatchEulerDiscreteScheduler without shift, so the given timesteps are used as they are",
    ],
}


def model_configs(size: str, layers: int = 8, heads: int = 8) -> tuple[TransformerConfig, VAEConfig, UpsamplerConfig]:
    """``mid``: the 2B head layout (64-wide heads, 128 latent channels) scaled to ``heads`` x 64 and ``layers`` blocks,
    the 0.9.5+ VAE at base width 32, the spatial upsampler at a quarter width. ``tiny``: a few-second CI size."""
    if size == "mid":
        transformer = dataclasses.replace(
            TRANSFORMER_2B,
            num_layers=layers,
            num_attention_heads=heads,
            cross_attention_dim=heads * TRANSFORMER_2B.attention_head_dim,
            caption_channels=TINY_CAPTION_CHANNELS,  # the tiny T5's width
        )
        return transformer, scaled_vae(32), dataclasses.replace(UPSAMPLER_SPATIAL, mid_channels=128)
    if size == "tiny":
        vae = scaled_vae(8, layers=1, latent_channels=TINY_2B.in_channels)
        return TINY_2B, vae, TINY_UPSAMPLER
    raise ValueError(f"unknown model size {size!r} (mid or tiny)")


def write_model(
    folder: Path, size: str, layers: int = 8, heads: int = 8, dtype: torch.dtype = torch.float32
) -> dict[str, str]:
    """Write the random model set once, weights stored in ``dtype`` (bfloat16 like the released files when the
    run is bfloat16); returns the paths every implementation loads."""
    from ltxv.testing.checkpoints import write_tiny_kit

    transformer, vae, upsampler = model_configs(size, layers, heads)
    kit = write_tiny_kit(folder, seed=0, transformer=transformer, vae=vae, upsampler=upsampler, dtype=dtype)
    return {"checkpoint": str(kit.checkpoint), "upsampler": str(kit.upsampler), "text_encoder": str(kit.text_encoder)}


def recipe(guidance_scale: float | None) -> Recipe:
    """The preset, without its STG block list (its scale is 0, and block 42 does not exist in a small model), with
    the CFG scale overridden when asked."""
    r = get_preset(PRESET)

    def edit(p: PassSettings) -> PassSettings:
        p = dataclasses.replace(p, skip_block_list=None)
        return p if guidance_scale is None else dataclasses.replace(p, guidance_scale=guidance_scale)

    return dataclasses.replace(r, first_pass=edit(r.first_pass), second_pass=edit(r.second_pass))


def _hook_models(clock: PhaseClock, text_encoder: object, transformer: object, upsampler: object, vae: object) -> None:
    clock.hook(text_encoder, "forward", "text")
    clock.count(transformer, "forward", "transformer")
    clock.hook(upsampler, "forward", "upsample", then="pass2")
    clock.hook(vae, "decode", "decode")


# --------------------------------------------------------------------------------------------------------------------
# One implementation, in its own process
# --------------------------------------------------------------------------------------------------------------------


def _pass_kwargs(p: PassSettings) -> dict[str, Any]:
    """A recipe pass as the reference pipeline's keyword arguments (its YAML ``first_pass:`` block)."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple) else v

    kw = {f.name: plain(getattr(p, f.name)) for f in dataclasses.fields(p)}
    if kw["timesteps"] is None:
        del kw["timesteps"]
    return kw


def _ltxv(kit: dict, req: dict, dtype: torch.dtype, stages: Stages, clock: PhaseClock) -> Callable[[], torch.Tensor]:
    import ltxv
    from ltxv.pipelines.request import GenerationRequest

    with stages.stage("load"):
        pipe = ltxv.load(
            kit["checkpoint"], upsampler=kit["upsampler"], text_encoder=kit["text_encoder"], dtype=dtype, device="cpu"
        )
    m = pipe.models
    _hook_models(clock, pipe.text_encoder.model, m.transformer, m.upsampler, m.vae)
    request = GenerationRequest(recipe=req.pop("recipe"), **req)
    return lambda: pipe.generate(request).video  # (F, H, W, 3)


def _reference(
    kit: dict, req: dict, dtype: torch.dtype, stages: Stages, clock: PhaseClock
) -> Callable[[], torch.Tensor]:
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.models.transformers.transformer3d import Transformer3DModel
    from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline, LTXVideoPipeline
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
    from transformers import T5EncoderModel, T5Tokenizer

    r: Recipe = req["recipe"]
    ckpt = kit["checkpoint"]
    # inference.py's create_ltx_video_pipeline / create_latent_upsampler step by step (that module cannot be imported
    # without torchvision): the transformer in the recipe's precision, the VAE and T5 cast to bfloat16 always.
    with stages.stage("load"):
        transformer = Transformer3DModel.from_pretrained(ckpt)
        if dtype == torch.bfloat16:
            transformer = transformer.to(torch.bfloat16)
        vae = CausalVideoAutoencoder.from_pretrained(ckpt)
        scheduler = RectifiedFlowScheduler.from_pretrained(ckpt)
        text_encoder = T5EncoderModel.from_pretrained(kit["text_encoder"], subfolder="text_encoder")
        tokenizer = T5Tokenizer.from_pretrained(kit["text_encoder"], subfolder="tokenizer")
        pipe = LTXVideoPipeline(
            transformer=transformer,
            patchifier=SymmetricPatchifier(patch_size=1),
            text_encoder=text_encoder.to(torch.bfloat16),
            tokenizer=tokenizer,
            scheduler=scheduler,
            vae=vae.to(torch.bfloat16),
            prompt_enhancer_image_caption_model=None,
            prompt_enhancer_image_caption_processor=None,
            prompt_enhancer_llm_model=None,
            prompt_enhancer_llm_tokenizer=None,
            allowed_inference_steps=None,
        ).to("cpu")
        upsampler = LatentUpsampler.from_pretrained(kit["upsampler"]).to("cpu").eval()
        multi_scale = LTXMultiScalePipeline(pipe, latent_upsampler=upsampler)
    _hook_models(clock, pipe.text_encoder, pipe.transformer, upsampler, pipe.vae)
    strategy = {
        "attention_values": SkipLayerStrategy.AttentionValues,
        "attention_skip": SkipLayerStrategy.AttentionSkip,
        "transformer_block": SkipLayerStrategy.TransformerBlock,
        "residual": SkipLayerStrategy.Residual,
    }[r.stg_mode]

    def generate() -> torch.Tensor:
        torch.manual_seed(req["seed"])
        out = multi_scale(
            downscale_factor=r.downscale_factor,
            first_pass=_pass_kwargs(r.first_pass),
            second_pass=_pass_kwargs(r.second_pass),
            prompt=req["prompt"],
            negative_prompt=req["negative_prompt"],
            prompt_attention_mask=None,
            negative_prompt_attention_mask=None,
            height=req["height"],
            width=req["width"],
            num_frames=req["num_frames"],
            frame_rate=req["frame_rate"],
            generator=torch.Generator().manual_seed(req["seed"]),
            output_type="pt",
            callback_on_step_end=None,
            skip_layer_strategy=strategy,
            media_items=None,
            conditioning_items=None,
            is_video=True,
            vae_per_channel_normalize=True,
            image_cond_noise_scale=0.15,
            decode_timestep=r.decode_timestep,
            decode_noise_scale=r.decode_noise_scale,
            mixed_precision=False,
            offload_to_cpu=False,
            device="cpu",
            enhance_prompt=False,
        ).images
        return out[0].permute(1, 2, 3, 0)  # (C, F, H, W) -> (F, H, W, 3)

    return generate


def _diffusers(
    kit: dict, req: dict, dtype: torch.dtype, stages: Stages, clock: PhaseClock
) -> Callable[[], torch.Tensor]:
    import torch.nn.functional as F
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, LTXLatentUpsamplePipeline
    from diffusers_port import diffusers_transformer, diffusers_upsampler, diffusers_vae
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import T5EncoderModel, T5Tokenizer

    from ltxv.config import CheckpointConfig

    r: Recipe = req["recipe"]
    with stages.stage("load"):
        with safe_open(kit["checkpoint"], "pt") as f:
            cfg = CheckpointConfig.from_metadata(f.metadata())
        with safe_open(kit["upsampler"], "pt") as f:
            up_cfg = UpsamplerConfig.from_dict(json.loads(f.metadata()["config"]))
        sd = load_file(kit["checkpoint"])
        transformer = diffusers_transformer({k: v for k, v in sd.items() if not k.startswith("vae.")}, cfg.transformer)
        vae = diffusers_vae({k: v for k, v in sd.items() if k.startswith("vae.")}, cfg.vae)
        del sd
        upsampler = diffusers_upsampler(load_file(kit["upsampler"]), up_cfg)
        text = Path(kit["text_encoder"])
        pipe = LTXConditionPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
            vae=vae,
            text_encoder=T5EncoderModel.from_pretrained(text / "text_encoder"),
            tokenizer=T5Tokenizer.from_pretrained(text / "tokenizer"),
            transformer=transformer,
        ).to(dtype=dtype)
        upsample = LTXLatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler.to(dtype))
    _hook_models(clock, pipe.text_encoder, pipe.transformer, upsampler, pipe.vae)
    s = pipe.vae_spatial_compression_ratio
    h1 = int(req["height"] * r.downscale_factor) // s * s
    w1 = int(req["width"] * r.downscale_factor) // s * s
    p1, p2 = r.first_pass, r.second_pass

    def common(p: PassSettings) -> dict[str, Any]:
        return {
            "prompt": req["prompt"],
            "negative_prompt": req["negative_prompt"],
            "num_frames": req["num_frames"],
            "frame_rate": req["frame_rate"],
            "guidance_scale": p.guidance_scale,
            "guidance_rescale": p.rescaling_scale if p.guidance_scale > 1 else 0.0,
            "decode_timestep": r.decode_timestep,
            "decode_noise_scale": r.decode_noise_scale,
            "image_cond_noise_scale": 0.0,
        }

    def generate() -> torch.Tensor:
        g = torch.Generator().manual_seed(req["seed"])
        low = pipe(
            **common(p1),
            height=h1,
            width=w1,
            timesteps=[1000 * t for t in p1.timesteps],
            generator=g,
            output_type="latent",
        ).frames
        up = upsample(
            latents=low,
            adain_factor=1.0,
            tone_map_compression_ratio=p2.tone_map_compression_ratio,
            output_type="latent",
        ).frames
        # Pass 2 starts from the upsampled latents re-noised to its first timestep: diffusers does that when
        # denoise_strength < 1, keeping the last int(n * strength) of n timesteps, so one is prepended and dropped.
        k = len(p2.timesteps)
        video = pipe(
            **common(p2),
            height=2 * h1,
            width=2 * w1,
            timesteps=[1000.0] + [1000 * t for t in p2.timesteps],
            denoise_strength=(k + 0.5) / (k + 1),
            latents=up,
            generator=g,
            output_type="pt",
        ).frames[0]  # (F, 3, H, W) in [0, 1]
        video = F.interpolate(video.float(), size=(req["height"], req["width"]), mode="bilinear", align_corners=False)
        return video.permute(0, 2, 3, 1)  # (F, H, W, 3)

    return generate


_BUILDERS = {"ltxv": _ltxv, "reference": _reference, "diffusers": _diffusers}


# The libraries each implementation imports, timed as their own stage (not counted in the total: a server imports once).
_IMPORTS = {
    "ltxv": ("ltxv.pipelines.generate",),
    "reference": ("ltx_video.pipelines.pipeline_ltx_video", "ltx_video.models.autoencoders.causal_video_autoencoder"),
    "diffusers": ("diffusers.pipelines.ltx.pipeline_ltx_condition", "diffusers_port", "transformers"),
}


def warm_caches(kit: dict, impls: list[str]) -> dict:
    """In a throwaway process: import every implementation's libraries and read the model files once, so that the
    first implementation measured does not alone pay for reading them from disk (after part (b)'s 9 GB decodes the
    file cache is cold: in one full run ltxv, measured first, took 8.2 s there and 6.3 s alone)."""
    import importlib

    for impl in impls:
        for module in _IMPORTS[impl]:
            importlib.import_module(module)
    for path in Path(kit["text_encoder"]).rglob("*"):
        if path.is_file():
            path.read_bytes()
    for key in ("checkpoint", "upsampler"):
        Path(kit[key]).read_bytes()
    return {}


def measure_impl(impl: str, kit: dict, request: dict, dtype: str, guidance_scale: float | None) -> dict:
    """In a fresh process (``measure.run_isolated``): load ``impl``, generate once, report stages and peak RSS."""
    import importlib

    process_peak = peak_rss()  # the interpreter and torch
    torch.manual_seed(0)
    stages = Stages()
    with stages.stage("import"):
        for module in _IMPORTS[impl]:
            importlib.import_module(module)
    clock = PhaseClock(stages)
    req = {**request, "recipe": recipe(guidance_scale)}
    generate = _BUILDERS[impl](kit, req, getattr(torch, dtype), stages, clock)
    t0 = time.perf_counter()
    with torch.inference_mode(), clock.phase("pass1"):
        video = generate()
    generate_seconds = time.perf_counter() - t0
    load = stages.stages["load"].seconds
    return {
        "stages": stages.to_dict(),
        "load_seconds": load,
        "generate_seconds": generate_seconds,
        "total_seconds": load + generate_seconds,
        "peak_rss": max([process_peak] + [s.peak_rss for s in stages.stages.values()]),
        "transformer": clock.counters["transformer"],
        "video_shape": list(video.shape),
        "video_mean": float(video.float().mean()),
        "notes": NOTES.get(impl, []),
    }


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------


def run(
    height: int = 320,
    width: int = 512,
    frames: int = 49,
    *,
    size: str = "mid",
    layers: int = 8,
    heads: int = 8,
    dtype: str = "bfloat16",
    guidance_scale: float | None = None,
    seed: int = 42,
    impls: tuple[str, ...] = IMPLEMENTATIONS,
    timeout: float | None = None,
    repeat: int = 1,
) -> dict:
    """``repeat``: runs per implementation, each a fresh process, interleaved (ltxv, reference, diffusers, ltxv, ...)
    so that a slow spell of the machine hits every column alike; the run with the lowest total is reported, every
    total is kept in ``totals``."""
    request = {
        "prompt": PROMPT,
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        "height": height,
        "width": width,
        "num_frames": frames,
        "frame_rate": 25.0,
        "seed": seed,
    }
    transformer, vae, upsampler = model_configs(size, layers, heads)
    results: dict = {
        "config": {
            "preset": PRESET,
            "request": request,
            "dtype": dtype,
            "guidance_scale": guidance_scale,
            "model": {
                "size": size,
                "transformer": {"layers": transformer.num_layers, "width": transformer.inner_dim},
                "vae_base_width": vae.decoder_base_channels,
                "upsampler_width": upsampler.mid_channels,
            },
        }
    }
    with tempfile.TemporaryDirectory(prefix="ltxv-e2e-") as tmp:
        kit = write_model(Path(tmp), size, layers, heads, getattr(torch, dtype))
        kwargs = {"kit": kit, "request": request, "dtype": dtype, "guidance_scale": guidance_scale}
        run_isolated("end_to_end", "warm_caches", {"kit": kit, "impls": list(impls)}, timeout=timeout)
        totals: dict[str, list[float]] = {}
        for _ in range(repeat):
            for impl in impls:
                if "error" in results.get(impl, {}):
                    continue
                try:
                    r = run_isolated("end_to_end", "measure_impl", {"impl": impl, **kwargs}, timeout=timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as e:  # one failing column must not lose the others
                    results[impl] = {"error": str(e)[-3000:]}
                    continue
                totals.setdefault(impl, []).append(r["total_seconds"])
                if impl not in results or r["total_seconds"] < results[impl]["total_seconds"]:
                    results[impl] = r
        results["totals"] = totals
    for other in ("reference", "diffusers"):
        if all(k in results and "error" not in results[k] for k in ("ltxv", other)):
            ours, theirs = results["ltxv"], results[other]
            results[f"ltxv_over_{other}"] = {
                key: ours[key] / theirs[key] for key in ("total_seconds", "generate_seconds", "peak_rss")
            }
    return results


def print_report(res: dict) -> None:
    c = res["config"]
    q, m = c["request"], c["model"]
    print(
        f"end to end: {c['preset']} at {q['width']}x{q['height']}x{q['num_frames']}, {c['dtype']}, "
        f"transformer {m['transformer']['layers']} x {m['transformer']['width']}, VAE width {m['vae_base_width']}"
    )
    header = f"    {'':9s} " + " ".join(f"{s:>8s}" for s in (*STAGES, "total")) + "   transformer   peak RSS"
    print(header)
    for impl in IMPLEMENTATIONS:
        if impl not in res:
            continue
        r = res[impl]
        if "error" in r:
            print(f"    {impl:9s} failed: {r['error'].strip().splitlines()[-1]}")
            continue
        cells = " ".join(f"{r['stages'][s]['seconds']:8.2f}" if s in r["stages"] else f"{'-':>8s}" for s in STAGES)
        t = r["transformer"]
        share = t["seconds"] / r["generate_seconds"]
        print(
            f"    {impl:9s} {cells} {r['total_seconds']:8.2f}   {int(t['calls']):3d} calls {100 * share:3.0f}%"
            f"   {gib(r['peak_rss'])}"
        )
    for other in ("reference", "diffusers"):
        if f"ltxv_over_{other}" in res:
            ratio = res[f"ltxv_over_{other}"]
            print(
                f"    ltxv / {other}: time {ratio['total_seconds']:.2f} (generate {ratio['generate_seconds']:.2f}),"
                f" peak RSS {ratio['peak_rss']:.2f}"
            )
    for impl, totals in res.get("totals", {}).items():
        if len(totals) > 1:
            print(
                f"    {impl} totals of {len(totals)} runs: {', '.join(f'{t:.2f}' for t in totals)} s (the best shown)"
            )
    for impl in IMPLEMENTATIONS:
        for note in res.get(impl, {}).get("notes", []):
            print(f"    note ({impl}): {note}")


def main(argv: list[str] | None = None) -> dict:
    from transformer_step import available

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (320, 512, 49))
    p.add_argument("--size", choices=["mid", "tiny"], default="mid")
    p.add_argument("--layers", type=int, default=8, help="transformer blocks of the mid-sized model")
    p.add_argument("--heads", type=int, default=8, help="64-wide heads of the mid-sized model (8 -> width 512)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--guidance-scale", type=float, help="CFG scale for both passes (default: the preset's, 1 = off)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--impls", nargs="+", default=[i for i in IMPLEMENTATIONS if available(i)], choices=IMPLEMENTATIONS)
    p.add_argument(
        "-r", "--repeat", type=int, default=2, help="fresh-process runs per implementation; the best is kept"
    )
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(
        a.height,
        a.width,
        a.frames,
        size=a.size,
        layers=a.layers,
        heads=a.heads,
        dtype=a.dtype,
        guidance_scale=a.guidance_scale,
        seed=a.seed,
        impls=tuple(a.impls),
        repeat=a.repeat,
    )
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
