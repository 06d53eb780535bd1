"""The latent upsampler against the reference LatentUpsampler, same random weights, fp32 CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxv.config import UPSAMPLER_SPATIAL, ConfigError, UpsamplerConfig
from ltxv.model.upsampler import LatentUpsampler
from ltxv.testing.random_weights import random_state_dict

ref_mod = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")

VARIANTS = {
    "spatial3d": UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=2, dims=3),
    "spatial2d": UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=2),
    "temporal": UpsamplerConfig(
        in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=False, temporal_upsample=True
    ),
    "spatiotemporal": UpsamplerConfig(
        in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True, temporal_upsample=True
    ),
}


def _pair(cfg: UpsamplerConfig, seed: int = 0) -> tuple[LatentUpsampler, torch.nn.Module]:
    ours = LatentUpsampler(cfg)
    sd = random_state_dict(ours, seed)
    ours.load_state_dict(sd, strict=True)
    ref = ref_mod.LatentUpsampler.from_config(cfg.to_dict())
    ref.load_state_dict(sd, strict=True)
    return ours.eval(), ref.eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_upsampler_matches_reference(name: str) -> None:
    cfg = VARIANTS[name]
    ours, ref = _pair(cfg)
    z = torch.randn(2, cfg.in_channels, 3, 5, 7)  # odd latent grid
    with torch.no_grad():
        want = ref(z)
        got = ours(z)
    assert got.shape == want.shape
    f = 2 * 3 - 1 if cfg.temporal_upsample else 3
    s = 2 if cfg.spatial_upsample else 1
    assert got.shape == (2, cfg.in_channels, f, 5 * s, 7 * s)
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= 1e-5 * scale


def test_normalised_wrapper_is_denormalise_upsample_normalise() -> None:
    cfg = VARIANTS["spatial3d"]
    ours, ref = _pair(cfg, seed=3)
    mean, std = torch.randn(cfg.in_channels) * 0.3, torch.rand(cfg.in_channels) + 0.5
    ours.set_latent_statistics(mean, std)
    z = torch.randn(1, cfg.in_channels, 2, 4, 4)
    m, s = mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        want = (ref(z * s + m) - m) / s
        got = ours(z)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    assert "latent_mean" not in ours.state_dict()  # the statistics never leak into the checkpoint format


def test_real_size_keys_and_parameter_count() -> None:
    with torch.device("meta"):
        ours = LatentUpsampler(UPSAMPLER_SPATIAL)
        ref = ref_mod.LatentUpsampler.from_config(UPSAMPLER_SPATIAL.to_dict())
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in ours.parameters()) == 126_250_624  # reference study §5


def test_bfloat16_close_to_float32() -> None:
    cfg = VARIANTS["spatial3d"]
    ours, _ = _pair(cfg)
    z = torch.randn(1, cfg.in_channels, 2, 4, 6)
    with torch.no_grad():
        want = ours(z)
        got = ours.to(torch.bfloat16)(z.bfloat16()).float()
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < 3e-2  # measured about 1e-2: bf16 has an 8-bit mantissa
    # The pipeline hands a bf16 upsampler float32 latents: computed in bf16, returned in float32.
    with torch.no_grad():
        mixed = ours(z)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, ours(z.bfloat16()).float())


def test_bad_configs_are_loud() -> None:
    with pytest.raises(ConfigError, match="neither"):
        UpsamplerConfig.from_dict({"spatial_upsample": False, "temporal_upsample": False})
    with pytest.raises(ConfigError, match="unsupported key"):
        UpsamplerConfig.from_dict({"in_channels": 128, "frobnicate": 1})
    with pytest.raises(ConfigError, match="temporal_upsample needs dims=3"):
        UpsamplerConfig.from_dict({"dims": 2, "spatial_upsample": False, "temporal_upsample": True})
    assert UpsamplerConfig.from_dict(UPSAMPLER_SPATIAL.to_dict()) == UPSAMPLER_SPATIAL
    assert dataclasses.replace(UPSAMPLER_SPATIAL, mid_channels=64).mid_channels == 64
