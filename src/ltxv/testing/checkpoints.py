"""Writing tiny random checkpoints in the official format.

The tensors' names and shapes come from the same modules and configs that load the real files, so a kit written here
proves the loader end to end: single file with ``model.diffusion_model.*`` and ``vae.*`` keys and the JSON config in its
metadata, a separate upsampler file, a tiny T5 folder laid out like the hub repo. Values are drawn from a seeded
generator by tensor name, so the same seed always gives the same files, whatever the module init does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn

from ltxv.config import CheckpointConfig, SchedulerConfig, TransformerConfig, UpsamplerConfig, VAEConfig
from ltxv.model.transformer import Transformer
from ltxv.model.upsampler import LatentUpsampler
from ltxv.model.vae import VideoVAE
from ltxv.quant.fp8 import FP8, SCALE, is_fp8_linear_name, quantize_fp8
from ltxv.testing.configs import TINY_2B, TINY_UPSAMPLER, TINY_VAE
from ltxv.testing.random_weights import random_state_dict

CHECKPOINT_NAME = "ltxv-tiny.safetensors"
UPSAMPLER_NAME = "ltxv-tiny-spatial-upscaler.safetensors"
TEXT_ENCODER_DIR = "text_encoder_t5"
Fp8Layout = Literal["cast", "scaled"]


def _meta(build: type[nn.Module], cfg: object) -> nn.Module:
    with torch.device("meta"):
        return build(cfg)


def write_single_file(
    path: str | Path,
    transformer: TransformerConfig = TINY_2B,
    vae: VAEConfig = TINY_VAE,
    *,
    seed: int = 0,
    scheduler: SchedulerConfig | None = None,
    allowed_inference_steps: tuple[float, ...] | None = None,
    dtype: torch.dtype = torch.float32,
    fp8: Fp8Layout | None = None,
) -> Path:
    """Write a transformer + VAE single-file checkpoint in the official layout.

    ``fp8``: store the transformer blocks' attention and feed-forward weights in float8_e4m3fn, either ``"cast"``
    (a plain cast of the ``dtype`` weight, no scale: Lightricks' ``-fp8`` files) or ``"scaled"`` (per-tensor absmax
    quantisation with a ``<linear>.weight_scale`` float32 scalar each, what ``ltxv.quant.quantize_`` holds)."""
    cfg = CheckpointConfig(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler or SchedulerConfig(sampler="LinearQuadratic"),
        allowed_inference_steps=allowed_inference_steps,
    )
    weights = random_state_dict(_meta(Transformer, transformer), seed, dtype)
    if fp8 is not None:
        weights = _to_fp8(weights, fp8)
    tensors = {"model.diffusion_model." + k: v for k, v in weights.items()}
    tensors |= {"vae." + k: v for k, v in random_state_dict(_meta(VideoVAE, vae), seed + 1, dtype).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=cfg.to_metadata())
    return path


def _to_fp8(weights: dict[str, torch.Tensor], layout: Fp8Layout) -> dict[str, torch.Tensor]:
    if layout not in ("cast", "scaled"):
        raise ValueError(f"fp8 must be 'cast' or 'scaled', got {layout!r}")
    out: dict[str, torch.Tensor] = {}
    for name, w in weights.items():
        module = name.removesuffix(".weight")
        if module == name or not is_fp8_linear_name(module):
            out[name] = w
        elif layout == "cast":
            out[name] = w.to(FP8)
        else:
            out[name], out[f"{module}.{SCALE}"] = quantize_fp8(w)
    return out


def write_upsampler_file(
    path: str | Path, cfg: UpsamplerConfig = TINY_UPSAMPLER, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = random_state_dict(_meta(LatentUpsampler, cfg), seed + 2, dtype)
    save_file(tensors, str(path), metadata={"config": json.dumps(cfg.to_dict())})
    return path


@dataclass(frozen=True)
class TinyKit:
    """Paths of a written tiny model set."""

    checkpoint: Path
    upsampler: Path
    text_encoder: Path


def write_tiny_kit(
    folder: str | Path,
    *,
    seed: int = 0,
    transformer: TransformerConfig = TINY_2B,
    vae: VAEConfig = TINY_VAE,
    upsampler: UpsamplerConfig = TINY_UPSAMPLER,
    allowed_inference_steps: tuple[float, ...] | None = None,
    fp8: Fp8Layout | None = None,
    dtype: torch.dtype = torch.float32,
) -> TinyKit:
    """Write a complete tiny model set (checkpoint, upsampler, T5 + tokenizer) into ``folder``; a few seconds.
    ``fp8``: see :func:`write_single_file`; ``dtype``: the stored dtype of the single-file checkpoint's weights (the
    released ones are bfloat16; the released upsamplers are float32, and so is this one)."""
    from ltxv.testing.text import write_tiny_text_encoder

    folder = Path(folder)
    steps = allowed_inference_steps
    ckpt = write_single_file(
        folder / CHECKPOINT_NAME, transformer, vae, seed=seed, allowed_inference_steps=steps, fp8=fp8, dtype=dtype
    )
    up = write_upsampler_file(folder / UPSAMPLER_NAME, upsampler, seed=seed)
    text = folder / TEXT_ENCODER_DIR
    write_tiny_text_encoder(text, d_model=transformer.caption_channels, seed=seed)
    return TinyKit(checkpoint=ckpt, upsampler=up, text_encoder=text)
