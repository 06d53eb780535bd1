"""The causal video VAE against the reference CausalVideoAutoencoder, identical random weights, fp32 CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxv.config import VAE_0_9_5, ConfigError, VAEBlock
from ltxv.model.vae import VideoVAE
from ltxv.testing.configs import TINY_VAE
from ltxv.testing.random_weights import random_state_dict

cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
vae_io = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")

# The 0.9.5 layout with the other paddings, a causal decoder and group norm, to cover those branches too.
VARIANTS = {
    "tiny": TINY_VAE,
    "causal-decoder-replicate": dataclasses.replace(TINY_VAE, causal_decoder=True, spatial_padding_mode="replicate"),
    "per-channel-logvar-groupnorm": dataclasses.replace(
        TINY_VAE,
        latent_log_var="per_channel",
        norm_layer="group_norm",
        encoder_base_channels=32,
        decoder_base_channels=32,
    ),
}


def _pair(cfg, seed: int = 0):
    ours = VideoVAE(cfg)
    sd = random_state_dict(ours, seed)
    ours.load_state_dict(sd, strict=True)
    ref = cva.CausalVideoAutoencoder.from_config(cfg.to_dict())
    # The reference loader strips the statistics from the strict load and registers them as buffers itself.
    ref.load_state_dict({("vae." + k): v for k, v in sd.items()})
    return ours.eval(), ref.eval()


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize(("frames", "h", "w"), [(9, 64, 64), (17, 96, 160)])
def test_encode_decode_match_reference(name: str, frames: int, h: int, w: int) -> None:
    ours, ref = _pair(VARIANTS[name])
    x = torch.rand(2, 3, frames, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(11)
        want = vae_io.vae_encode(x, ref, vae_per_channel_normalize=True)  # a posterior sample, global RNG
        got = ours.encode(x, generator=torch.Generator().manual_seed(11))
        _close(got, want)
        # The posterior mean is the reference's distribution mode.
        mode = ref.encode(x).latent_dist.mode()
        _close(ours.encode(x), ours.normalize(mode))
        t = torch.tensor([0.05, 0.4])
        kw = {"timestep": t} if VARIANTS[name].timestep_conditioning else {}
        want_x = vae_io.vae_decode(want, ref, True, vae_per_channel_normalize=True, **kw)
        _close(ours.decode(want, timestep=t), want_x)
    assert got.shape == (2, VARIANTS[name].latent_channels, (frames - 1) // 8 + 1, h // 32, w // 32)


def test_scalar_timestep_equals_per_sample() -> None:
    ours, _ = _pair(TINY_VAE)
    z = torch.randn(2, 16, 2, 2, 3)
    with torch.no_grad():
        assert torch.equal(ours.decode(z, timestep=0.05), ours.decode(z, timestep=torch.tensor([0.05, 0.05])))
        assert not torch.allclose(ours.decode(z, timestep=0.05), ours.decode(z, timestep=0.5))


def test_real_size_keys_shapes_and_parameter_count() -> None:
    with torch.device("meta"):
        ours = VideoVAE(VAE_0_9_5)
        ref = cva.CausalVideoAutoencoder.from_config(VAE_0_9_5.to_dict())
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    want |= {"per_channel_statistics.mean-of-means": (128,), "per_channel_statistics.std-of-means": (128,)}
    assert got == want
    assert sum(p.numel() for p in ours.encoder.parameters()) == 694_098_881
    assert sum(p.numel() for p in ours.decoder.parameters()) == 552_814_641
    assert VAE_0_9_5.spatial_compression == 32 and VAE_0_9_5.temporal_compression == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decoder_blocks": (VAEBlock("res_x", 2, inject_noise=True),)}, "unsupported VAE version.*inject_noise"),
        ({"encoder_blocks": (VAEBlock("res_x_y", 1),)}, "unsupported VAE version.*res_x_y"),
        ({"use_quant_conv": True, "latent_log_var": "per_channel"}, "unsupported VAE version"),
    ],
)
def test_old_layouts_are_refused_by_name(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VideoVAE(dataclasses.replace(TINY_VAE, **change))


def test_bad_input_shapes_are_named() -> None:
    ours, _ = _pair(TINY_VAE)
    with pytest.raises(ValueError, match="frames must be 8k\\+1"):
        ours.encode(torch.zeros(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match=r"expected video \(B, 3, F, H, W\)"):
        ours.encode(torch.zeros(3, 9, 64, 64))


def test_bfloat16_close_to_float32() -> None:
    ours, _ = _pair(TINY_VAE)
    x = torch.rand(1, 3, 9, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        v = ours.decode(z, 0.05)
        ours = ours.to(torch.bfloat16)
        zb = ours.encode(x.bfloat16()).float()
        vb = ours.decode(z.bfloat16(), 0.05).float()
    rel_z = ((zb - z).abs().max() / z.abs().max()).item()
    rel_v = ((vb - v).abs().max() / v.abs().max()).item()
    assert rel_z < 5e-2 and rel_v < 5e-2, (rel_z, rel_v)  # measured ~1e-2: bf16's 8-bit mantissa through ~20 convs
