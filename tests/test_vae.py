"""The causal video VAE against the reference CausalVideoAutoencoder, identical random weights, fp32 CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxv.config import VAE_0_9_5, ConfigError, VAEConfig, vae_blocks
from ltxv.model.vae import VideoVAE
from ltxv.testing.configs import TINY_VAE
from ltxv.testing.random_weights import random_state_dict

cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
vae_io = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")

_V090_BLOCKS = [
    ["res_x", 4],
    ["compress_all", 1],
    ["res_x_y", 1],
    ["res_x", 3],
    ["compress_all", 1],
    ["res_x_y", 1],
    ["res_x", 3],
    ["compress_all", 1],
    ["res_x", 3],
    ["res_x", 4],
]
_V091_DECODER = [
    ["res_x", {"num_layers": 5, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 6, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 7, "inject_noise": True}],
    ["compress_all", {"residual": True, "multiplier": 2}],
    ["res_x", {"num_layers": 8, "inject_noise": False}],
]
_COMMON = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
}
# The released configs as their checkpoints' metadata states them (0.9.0: one shared block list).
VAE_0_9_0 = VAEConfig.from_dict({**_COMMON, "blocks": _V090_BLOCKS})
VAE_0_9_1 = VAEConfig.from_dict(
    {**_COMMON, "encoder_blocks": _V090_BLOCKS, "decoder_blocks": _V091_DECODER, "timestep_conditioning": True}
)


def _tiny(cfg: VAEConfig, **kw: object) -> VAEConfig:
    """A released layout, one resnet per res_x and narrow, as a tiny test config."""
    shrink = tuple(dataclasses.replace(b, num_layers=1) for b in cfg.encoder_blocks)
    grow = tuple(dataclasses.replace(b, num_layers=1) for b in cfg.decoder_blocks)
    base = {"latent_channels": 16, "encoder_base_channels": 8, "decoder_base_channels": 8}
    return dataclasses.replace(cfg, encoder_blocks=shrink, decoder_blocks=grow, **(base | kw))


VARIANTS = {
    "tiny-0.9.5": TINY_VAE,
    "causal-decoder-replicate": dataclasses.replace(TINY_VAE, causal_decoder=True, spatial_padding_mode="replicate"),
    "per-channel-logvar-groupnorm": dataclasses.replace(
        TINY_VAE,
        latent_log_var="per_channel",
        norm_layer="group_norm",
        encoder_base_channels=32,
        decoder_base_channels=32,
    ),
    "tiny-0.9.0": _tiny(VAE_0_9_0),
    "tiny-0.9.1": _tiny(VAE_0_9_1),
    # The rest of the block vocabulary: strided time/space/widening convs, plain depth-to-space, constant log-variance.
    "strided-constant-logvar": dataclasses.replace(
        TINY_VAE,
        latent_log_var="constant",
        spatial_padding_mode="reflect",
        encoder_blocks=vae_blocks(
            ["res_x", {"num_layers": 1}],
            ["compress_space", {}],
            ["compress_time", {}],
            ["compress_all_x_y", {"multiplier": 2}],
            ["compress_all", {}],
            ["res_x", {"num_layers": 1}],
        ),
        decoder_blocks=vae_blocks(
            ["res_x", {"num_layers": 1, "inject_noise": True}],
            ["compress_space", {}],
            ["compress_time", {}],
            ["res_x_y", {"multiplier": 2}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["compress_all", {}],
            ["res_x", {"num_layers": 1}],
        ),
    ),
}


def _pair(cfg: VAEConfig, seed: int = 0) -> tuple[VideoVAE, torch.nn.Module]:
    ours = VideoVAE(cfg)
    sd = random_state_dict(
        ours, seed
    )  # every parameter re-randomised: tables, noise scales, std-of-means in [0.5, 1.5)
    ours.load_state_dict(sd, strict=True)
    ref = cva.CausalVideoAutoencoder.from_config(cfg.to_dict())
    # The reference loader strips the statistics from the strict load and registers them as buffers itself.
    ref.load_state_dict({("vae." + k): v for k, v in sd.items()})
    return ours.eval(), ref.eval()


def _close(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5 * max(1.0, want.abs().max().item()), diff
    return diff


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize(("frames", "h", "w"), [(9, 64, 64), (17, 96, 160)])
def test_encode_decode_match_reference(name: str, frames: int, h: int, w: int) -> None:
    cfg = VARIANTS[name]
    ours, ref = _pair(cfg)
    x = torch.rand(2, 3, frames, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        # The posterior mean: the reference's distribution mode, normalised as its pipeline does.
        mode = vae_io.normalize_latents(ref.encode(x).latent_dist.mode(), ref, vae_per_channel_normalize=True)
        _close(ours.encode(x), mode)
        # A posterior sample: the reference draws from the global RNG, we from a generator seeded alike.
        torch.manual_seed(11)
        want = vae_io.vae_encode(x, ref, vae_per_channel_normalize=True)
        got = ours.encode(x, generator=torch.Generator().manual_seed(11))
        _close(got, want)
        if cfg.latent_log_var != "constant":  # (std e^-15 makes the sample the mean to float precision)
            assert (got - mode).abs().max() > 1e-2
        t = torch.tensor([0.05, 0.4])  # per-sample decode timesteps
        kw = {"timestep": t} if cfg.timestep_conditioning else {}
        torch.manual_seed(5)  # the 0.9.1 noise injection draws from the global RNG in the reference
        want_x = vae_io.vae_decode(want, ref, True, vae_per_channel_normalize=True, **kw)
        _close(ours.decode(want, timestep=t, generator=torch.Generator().manual_seed(5)), want_x)
    assert got.shape == (2, cfg.latent_channels, (frames - 1) // 8 + 1, h // 32, w // 32)
    assert want_x.shape == x.shape


def test_noise_injection_is_seeded() -> None:
    ours, _ = _pair(VARIANTS["tiny-0.9.1"])
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours.decode(z, 0.05, torch.Generator().manual_seed(3))
        torch.manual_seed(3)  # no generator: the global RNG, as the reference
        assert torch.equal(ours.decode(z, 0.05), a)
        assert torch.equal(ours.decode(z, 0.05, torch.Generator().manual_seed(3)), a)
        assert (ours.decode(z, 0.05, torch.Generator().manual_seed(4)) - a).abs().max() > 1e-2


def test_encoder_is_causal() -> None:
    """The first latent frame sees only the first video frame (the reference's own demo check)."""
    ours, _ = _pair(TINY_VAE)
    x = torch.rand(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        _close(ours.encode(x[:, :, :1]), ours.encode(x)[:, :, :1])


def test_timestep_handling() -> None:
    ours, _ = _pair(TINY_VAE)
    z = torch.randn(2, 16, 2, 2, 3)
    with torch.no_grad():
        assert torch.equal(ours.decode(z, timestep=0.05), ours.decode(z, timestep=torch.tensor([0.05, 0.05])))
        assert not torch.allclose(ours.decode(z, timestep=0.05), ours.decode(z, timestep=0.5))
        with pytest.raises(ValueError, match="timestep-conditioned"):
            ours.decode(z)
    plain, _ = _pair(VARIANTS["tiny-0.9.0"])  # no timestep conditioning: the timestep is ignored
    with torch.no_grad():
        assert torch.equal(plain.decode(z, timestep=0.05), plain.decode(z))


@pytest.mark.parametrize(
    ("cfg", "encoder_params", "decoder_params"),
    [
        (VAE_0_9_5, 694_098_881, 552_814_641),
        (VAE_0_9_0, None, None),
        (VAE_0_9_1, None, None),
    ],
    ids=["0.9.5", "0.9.0", "0.9.1"],
)
def test_real_size_keys_shapes_and_parameter_count(cfg: VAEConfig, encoder_params: int, decoder_params: int) -> None:
    with torch.device("meta"):
        ours = VideoVAE(cfg)
        ref = cva.CausalVideoAutoencoder.from_config(cfg.to_dict())
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    want |= {"per_channel_statistics.mean-of-means": (128,), "per_channel_statistics.std-of-means": (128,)}
    assert got == want
    if encoder_params is not None:
        assert sum(p.numel() for p in ours.encoder.parameters()) == encoder_params
        assert sum(p.numel() for p in ours.decoder.parameters()) == decoder_params
        assert sum(p.numel() for p in ours.parameters()) == 1_246_913_522
    assert ours.spatial_compression == ref.spatial_downscale_factor == 32
    assert ours.temporal_compression == ref.temporal_downscale_factor == 8
    assert ours.latent_channels == 128


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_quant_conv": True, "latent_log_var": "per_channel"}, "use_quant_conv"),
        ({"normalize_latent_channels": True}, "normalize_latent_channels"),
        ({"latent_log_var": "none"}, "latent_log_var='none'"),
        ({"norm_layer": "layer_norm"}, "norm_layer='layer_norm'"),
        ({"norm_layer": "group_norm"}, r"group_norm \(32 groups\) on 8 channels"),
        ({"decoder_blocks": vae_blocks(["compress_all_res", {"multiplier": 2}])}, "decoder block 'compress_all_res'"),
        ({"decoder_blocks": vae_blocks(["res_x_y", {"inject_noise": True}])}, "inject_noise on a width-changing"),
    ],
)
def test_unsupported_configs_are_refused_by_name(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VideoVAE(dataclasses.replace(TINY_VAE, **change))


def test_bad_input_shapes_are_named() -> None:
    ours, _ = _pair(TINY_VAE)
    with pytest.raises(ValueError, match="frames must be 8k\\+1"):
        ours.encode(torch.zeros(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match=r"expected a video tensor \(B, 3, F, H, W\)"):
        ours.encode(torch.zeros(3, 9, 64, 64))


def test_normalize_round_trip() -> None:
    ours, ref = _pair(TINY_VAE)
    z = torch.randn(2, 16, 2, 3, 5)
    _close(ours.normalize(z), vae_io.normalize_latents(z, ref, vae_per_channel_normalize=True))
    _close(ours.denormalize(ours.normalize(z)), z)


# 0.9.1 at 64x64: its noise maps are then 4x4, 8x8, 16x16, sizes at which torch's CPU randn gives the same stream in
# bf16 as in fp32 (it does not for every size), so the comparison measures precision, not different noise.
@pytest.mark.parametrize(("name", "w"), [("tiny-0.9.5", 96), ("tiny-0.9.1", 64)])
def test_bfloat16_close_to_float32(name: str, w: int) -> None:
    ours, _ = _pair(VARIANTS[name])
    x = torch.rand(1, 3, 9, 64, w, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        v = ours.decode(z, 0.05, torch.Generator().manual_seed(0))
        ours = ours.to(torch.bfloat16)
        zb = ours.encode(x.bfloat16()).float()
        vb = ours.decode(z.bfloat16(), 0.05, torch.Generator().manual_seed(0)).float()
    rel_z = ((zb - z).abs().max() / z.abs().max()).item()
    rel_v = ((vb - v).abs().max() / v.abs().max()).item()
    # Measured max relative error ~1e-2 (bf16's 8-bit mantissa through ~20 convs); 5e-2 leaves headroom.
    assert rel_z < 5e-2 and rel_v < 5e-2, (rel_z, rel_v)
