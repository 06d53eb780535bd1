"""The demo model's networks: LTX-Video's own classes at a size two CPU cores train in about an hour.

Every config here goes into the written files' metadata, so the package loads them through the normal loader
(:func:`ltxv.weights.load.load_models`) with nothing demo-specific at run time.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltxv.config import CheckpointConfig, SchedulerConfig, TransformerConfig, UpsamplerConfig, VAEConfig, vae_blocks
from ltxv.model.transformer import Transformer
from ltxv.model.upsampler import LatentUpsampler
from ltxv.model.vae import VideoVAE

LATENT_CHANNELS = 32
CAPTION_CHANNELS = 64  # the demo T5's d_model

# The 0.9.5+ layout (space, time, all compression with residual space-to-depth; a residual depth-to-space decoder
# with timestep conditioning; pixel norm, one shared log-variance), narrow and one compression stage short of the
# released 32x32x8: patch 4, then space, time and all, so 16x spatial and 4x temporal (a 128x128x25 clip is 7x8x8
# latents). With the released four stages (a 4x4 latent grid at 128 px) the encoder's latents hardly differed between
# inputs for the first 800 steps and the decoder sat on the empty background; with three it learns the object within
# 100 steps (measured on single frames, training/train_vae.py's autoencoder phase). The encoder widens from 16 to 128,
# doubling at every compression; the decoder narrows from 128 at the latent grid to 32 at the 32x32 (patch 4) grid.
VAE = VAEConfig(
    encoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 1}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 1}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 1}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 1}],
    ),
    decoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 1, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 1, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 1, "inject_noise": False}],
    ),
    latent_channels=LATENT_CHANNELS,
    patch_size=4,
    norm_layer="pixel_norm",
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
    timestep_conditioning=True,
    encoder_base_channels=16,
    decoder_base_channels=32,
)

TRANSFORMER = TransformerConfig(
    num_layers=6,
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    cross_attention_dim=128,
    caption_channels=CAPTION_CHANNELS,
    causal_temporal_positioning=True,
)

UPSAMPLER = UpsamplerConfig(
    in_channels=LATENT_CHANNELS, mid_channels=64, num_blocks_per_stage=1, dims=3, spatial_upsample=True
)

SCHEDULER = SchedulerConfig(sampler="LinearQuadratic")

CHECKPOINT_NAME = "ltxv-demo.safetensors"
UPSAMPLER_NAME = "ltxv-demo-spatial-upscaler.safetensors"
TEXT_ENCODER_DIR = "text_encoder_t5"


def write_checkpoint(path: Path, transformer: Transformer, vae: VideoVAE, dtype: torch.dtype) -> Path:
    """The single file: ``model.diffusion_model.*`` + ``vae.*`` with the config in the metadata, as released."""
    cfg = CheckpointConfig(transformer=transformer.cfg, vae=vae.cfg, scheduler=SCHEDULER)
    tensors = {f"model.diffusion_model.{k}": v for k, v in transformer.state_dict().items()}
    tensors |= {f"vae.{k}": v for k, v in vae.state_dict().items()}
    save_file({k: v.detach().to(dtype).contiguous() for k, v in tensors.items()}, str(path), cfg.to_metadata())
    return path


def write_upsampler(path: Path, upsampler: LatentUpsampler) -> Path:
    """The released upsamplers are float32 files with their own config as the metadata; so is this one."""
    tensors = {k: v.detach().float().contiguous() for k, v in upsampler.state_dict().items()}
    save_file(tensors, str(path), {"config": json.dumps(upsampler.cfg.to_dict())})
    return path


def cpu_model() -> str:
    """The CPU's model name (for the training record and the measurements)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
