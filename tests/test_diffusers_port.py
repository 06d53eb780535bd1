"""The benchmark's diffusers column runs the same networks as ltxv: identical random weights, fp32, equal outputs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import diffusers_port

from ltxv.config import VAE_0_9_5, VAEConfig
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.model.upsampler import LatentUpsampler
from ltxv.model.vae import VideoVAE
from ltxv.testing.configs import TINY_2B, TINY_13B, TINY_UPSAMPLER, TINY_VAE, scaled_vae
from ltxv.testing.random_weights import random_state_dict

TOL = 1e-5

# The 0.9.5+ layout (the only one diffusers' converter maps for narrow widths), 8 channels wide, one resnet per stage.
TINY_VAE_095 = scaled_vae(8, layers=1, latent_channels=16)


def _ours(cls: type, cfg: object, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    with torch.device("meta"):
        meta = cls(cfg)
    sd = random_state_dict(meta, seed)
    model = cls(cfg)
    model.load_state_dict(sd)
    return model.eval(), sd


@pytest.mark.parametrize("cfg", [TINY_2B, TINY_13B], ids=["2b", "13b"])
@pytest.mark.parametrize("per_token", [False, True])
def test_transformer_forward_equal(cfg, per_token: bool) -> None:
    ours, sd = _ours(Transformer, cfg, seed=3)
    # The file's keys (with the prefix) go through diffusers' own converter.
    theirs = diffusers_port.diffusers_transformer({"model.diffusion_model." + k: v for k, v in sd.items()}, cfg)
    g = torch.Generator().manual_seed(0)
    b, (f, h, w), n_text = 2, (3, 4, 5), 12
    n = f * h * w
    tokens = torch.randn(b, n, cfg.in_channels, generator=g)
    positions = pixel_positions(latent_grid(f, h, w, b), causal_fix=True, frame_rate=25.0)
    timesteps = torch.rand(b, n, generator=g) if per_token else torch.tensor([0.9, 0.3])
    context = torch.randn(b, n_text, cfg.caption_channels, generator=g)
    mask = torch.ones(b, n_text, dtype=torch.int64)
    mask[0, 7:] = 0
    with torch.no_grad():
        want = ours(tokens, positions, timesteps, context, mask)
        got = theirs(
            hidden_states=tokens,
            encoder_hidden_states=context,
            timestep=timesteps * 1000,
            encoder_attention_mask=mask,
            video_coords=positions,
            return_dict=False,
        )[0]
    assert want.abs().mean() > 0.1
    assert (got - want).abs().max().item() < TOL


def test_vae_decode_with_timestep_equal() -> None:
    ours, sd = _ours(VideoVAE, TINY_VAE_095, seed=5)
    theirs = diffusers_port.diffusers_vae(sd, TINY_VAE_095)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 16, 3, 2, 3, generator=g)  # normalised latents
    t = torch.tensor([0.05, 0.4])
    mean = theirs.latents_mean.view(1, -1, 1, 1, 1)
    std = theirs.latents_std.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        want = ours.decode(z, timestep=t)
        got = theirs.decode(z * std + mean, t, return_dict=False)[0]
        other = theirs.decode(z * std + mean, torch.tensor([0.5, 0.9]), return_dict=False)[0]
    assert want.shape == (2, 3, 17, 64, 96)
    assert (theirs.spatial_compression_ratio, theirs.temporal_compression_ratio) == (32, 8)  # what pipelines read
    assert (got - want).abs().max().item() < TOL
    assert (other - want).abs().max().item() > 1e-2  # the timestep matters: the comparison above is not vacuous


def test_vae_encode_equal() -> None:
    ours, sd = _ours(VideoVAE, TINY_VAE_095, seed=6)
    theirs = diffusers_port.diffusers_vae({"vae." + k: v for k, v in sd.items()}, TINY_VAE_095)
    video = torch.rand(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        want = ours.encode(video)  # normalised posterior mean
        raw = theirs.encode(video).latent_dist.mode()
    got = (raw - theirs.latents_mean.view(1, -1, 1, 1, 1)) / theirs.latents_std.view(1, -1, 1, 1, 1)
    assert (got - want).abs().max().item() < TOL


def test_upsampler_equal() -> None:
    ours, sd = _ours(LatentUpsampler, TINY_UPSAMPLER, seed=7)
    theirs = diffusers_port.diffusers_upsampler(sd, TINY_UPSAMPLER)
    z = torch.randn(1, TINY_UPSAMPLER.in_channels, 2, 3, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = ours(z), theirs(z)
    assert want.shape == (1, TINY_UPSAMPLER.in_channels, 2, 6, 8)
    assert (got - want).abs().max().item() < TOL


def test_unexpressible_configs_name_the_feature() -> None:
    with pytest.raises(NotImplementedError, match="layout"):
        diffusers_port.vae_config(TINY_VAE)
    with pytest.raises(NotImplementedError, match="latent_log_var"):
        diffusers_port.vae_config(dataclasses.replace(TINY_VAE_095, latent_log_var="per_channel"))
    with pytest.raises(NotImplementedError, match="RoPE"):
        diffusers_port.transformer_config(dataclasses.replace(TINY_2B, positional_embedding_theta=500.0))
    with pytest.raises(NotImplementedError, match="timestep_scale_multiplier"):
        diffusers_port.transformer_config(dataclasses.replace(TINY_2B, timestep_scale_multiplier=1.0))


def test_real_vae_config_is_diffusers_095() -> None:
    """At the real size the mapped config is the one diffusers ships for 0.9.5+ (Lightricks/LTX-Video-0.9.5)."""
    c = diffusers_port.vae_config(VAE_0_9_5)
    assert isinstance(VAE_0_9_5, VAEConfig)
    assert c["block_out_channels"] == (128, 256, 512, 1024, 2048)
    assert c["decoder_block_out_channels"] == (256, 512, 1024)
    assert c["layers_per_block"] == (4, 6, 6, 2, 2)
    assert c["decoder_layers_per_block"] == (5, 5, 5, 5)
    assert c["downsample_type"] == ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    assert c["upsample_factor"] == (2, 2, 2) and c["upsample_residual"] == (True, True, True)
