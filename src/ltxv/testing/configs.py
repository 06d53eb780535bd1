"""Tiny network configs shaped like the real ones (same block structure, head dims 64 and 128), small enough to run
on a CPU in milliseconds. The key names and shapes they produce come from the same config code as the real sizes."""

from __future__ import annotations

import dataclasses

from ltxv.config import VAE_0_9_5, TransformerConfig, UpsamplerConfig, VAEConfig, vae_blocks

# T5 stand-in width: the tiny text encoder's d_model, hence the transformer's caption_channels.
TINY_CAPTION_CHANNELS = 32
TINY_LATENT_CHANNELS = 16

# 2B-shaped: head dim 64 (the real 2B is 32 x 64 = 2048). D = 128, so D % 6 = 2 unrotated RoPE channels as in 2B.
TINY_2B = TransformerConfig(
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=TINY_LATENT_CHANNELS,
    out_channels=TINY_LATENT_CHANNELS,
    cross_attention_dim=128,
    caption_channels=TINY_CAPTION_CHANNELS,
    causal_temporal_positioning=True,
)

# 13B-shaped: head dim 128 (the real 13B is 32 x 128 = 4096). D = 256, so D % 6 = 4 as in 13B.
TINY_13B = TransformerConfig(
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=128,
    in_channels=TINY_LATENT_CHANNELS,
    out_channels=TINY_LATENT_CHANNELS,
    cross_attention_dim=256,
    caption_channels=TINY_CAPTION_CHANNELS,
    causal_temporal_positioning=True,
)


# The 0.9.5+ VAE layout (space, time, all, all compression; residual depth-to-space decoder; timestep conditioning),
# narrow and shallow.
TINY_VAE = VAEConfig(
    encoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 1}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 1}],
        ["compress_time_res", {"multiplier": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 1}],
    ),
    decoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 1, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 1, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 1, "inject_noise": False}],
    ),
    latent_channels=TINY_LATENT_CHANNELS,
    patch_size=4,
    norm_layer="pixel_norm",
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
    timestep_conditioning=True,
    encoder_base_channels=8,
    decoder_base_channels=8,
)

TINY_UPSAMPLER = UpsamplerConfig(
    in_channels=TINY_LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True
)


def scaled_vae(
    width: int, *, layers: int | None = None, latent_channels: int = 128, encoder_width: int | None = None
) -> VAEConfig:
    """The released 0.9.5+ VAE layout (:data:`ltxv.config.VAE_0_9_5`: its block list, compression and timestep
    conditioning) at another base width (``encoder_width`` for the encoder if it differs), and, if given, one resnet
    count for every stage: the benchmarks' mid-sized VAE and the tests' narrow real-layout ones."""

    def depth(blocks: tuple) -> tuple:
        return blocks if layers is None else tuple(dataclasses.replace(b, num_layers=layers) for b in blocks)

    return dataclasses.replace(
        VAE_0_9_5,
        encoder_blocks=depth(VAE_0_9_5.encoder_blocks),
        decoder_blocks=depth(VAE_0_9_5.decoder_blocks),
        latent_channels=latent_channels,
        encoder_base_channels=width if encoder_width is None else encoder_width,
        decoder_base_channels=width,
    )
