"""ltxv's networks as diffusers models: config mapped from ours, weights converted from the official single-file keys
by diffusers' own single-file conversion functions, so a diffusers column in a benchmark runs the same network.

    diffusers_transformer(state_dict, cfg) -> LTXVideoTransformer3DModel
    diffusers_vae(state_dict, cfg)         -> AutoencoderKLLTXVideo
    diffusers_upsampler(state_dict, cfg)   -> LTXLatentUpsamplerModel

``state_dict`` may carry the file's prefixes (``model.diffusion_model.``, ``vae.``) or be the bare module keys of
ltxv's ``Transformer`` / ``VideoVAE`` / ``LatentUpsampler``. Models are built on the meta device and take the given
tensors as they are (dtype included). Configs diffusers cannot express raise ``NotImplementedError`` naming the feature.

Calling conventions that differ from ltxv (tested in ``tests/test_diffusers_port.py``): the transformer takes
timesteps scaled by 1000 and ltxv's positions as ``video_coords``; the VAE decodes *raw* latents
(``z * latents_std + latents_mean``) and takes the decode timestep as ``temb``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_ltx_transformer_checkpoint_to_diffusers,
    convert_ltx_vae_checkpoint_to_diffusers,
)
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

from ltxv.config import VAE_0_9_5, TransformerConfig, UpsamplerConfig, VAEConfig

_TRANSFORMER_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "vae."
# diffusers hard-codes these in LTXVideoRotaryPosEmbed and in its pipelines' timestep scaling.
_DIFFUSERS_ROPE = (10000.0, (20.0, 2048.0, 2048.0))
_DIFFUSERS_TIMESTEP_SCALE = 1000.0
_DIFFUSERS_QK_NORM_EPS = 1e-5
# diffusers' converter picks its 0.9.5 key table when the encoder's conv_out takes this many channels (the real width).
_CONVERTER_095_WIDTH = 2048
_LAYOUT_095 = (
    tuple(b.kind for b in VAE_0_9_5.encoder_blocks),
    tuple(b.kind for b in VAE_0_9_5.decoder_blocks),
)


def _unsupported(what: str) -> NotImplementedError:
    return NotImplementedError(f"diffusers cannot express {what}")


def _prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k if k.startswith(prefix) else prefix + k: v for k, v in state_dict.items()}


def _build(cls: type, config: dict, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    with torch.device("meta"):
        model = cls(**config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------------------------------


def transformer_config(cfg: TransformerConfig) -> dict:
    """The ``LTXVideoTransformer3DModel`` config of an ltxv transformer config."""
    theta, max_pos = _DIFFUSERS_ROPE
    if cfg.positional_embedding_theta != theta or tuple(cfg.positional_embedding_max_pos) != max_pos:
        raise _unsupported(
            f"RoPE theta={cfg.positional_embedding_theta}, max_pos={cfg.positional_embedding_max_pos} "
            f"(fixed to {theta}, {max_pos})"
        )
    if cfg.timestep_scale_multiplier != _DIFFUSERS_TIMESTEP_SCALE:
        raise _unsupported(f"timestep_scale_multiplier={cfg.timestep_scale_multiplier} (its pipelines scale by 1000)")
    if cfg.qk_norm_eps != _DIFFUSERS_QK_NORM_EPS:
        raise _unsupported(f"qk_norm_eps={cfg.qk_norm_eps} (fixed to {_DIFFUSERS_QK_NORM_EPS})")
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "cross_attention_dim": cfg.cross_attention_dim,
        "num_layers": cfg.num_layers,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps,
        "caption_channels": cfg.caption_channels,
        "attention_bias": cfg.attention_bias,
        "attention_out_bias": cfg.attention_out_bias,
    }


def diffusers_transformer(state_dict: Mapping[str, torch.Tensor], cfg: TransformerConfig) -> LTXVideoTransformer3DModel:
    """diffusers' transformer holding the same weights as ltxv's ``Transformer(cfg)`` with ``state_dict``."""
    converted = convert_ltx_transformer_checkpoint_to_diffusers(_prefixed(state_dict, _TRANSFORMER_PREFIX))
    return _build(LTXVideoTransformer3DModel, transformer_config(cfg), converted)


# --------------------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------------------


def vae_config(cfg: VAEConfig) -> dict:
    """The ``AutoencoderKLLTXVideo`` config of an ltxv VAE config with the 0.9.5+ block layout (any widths and depths)."""
    enc, dec = cfg.encoder_blocks, cfg.decoder_blocks
    if (tuple(b.kind for b in enc), tuple(b.kind for b in dec)) != _LAYOUT_095:
        raise _unsupported("a VAE block layout other than 0.9.5+'s (its key converter is positional)")
    for name, value, want in (
        ("norm_layer", cfg.norm_layer, "pixel_norm"),
        ("latent_log_var", cfg.latent_log_var, "uniform"),
        ("use_quant_conv", cfg.use_quant_conv, False),
        ("normalize_latent_channels", cfg.normalize_latent_channels, False),
        ("spatial_padding_mode", cfg.spatial_padding_mode, "zeros"),
    ):
        if value != want:
            raise _unsupported(f"VAE {name}={value!r} (only {want!r})")
    if any(b.inject_noise for b in dec):
        raise _unsupported("decoder noise injection in the 0.9.5+ layout")
    downs = [b for b in enc if b.kind != "res_x"]
    ups = [b for b in dec if b.kind != "res_x"]
    if len({(b.multiplier or 1, b.residual) for b in ups}) != 1:
        raise _unsupported("decoder upsamplers with different multipliers or residual flags")
    widths = [cfg.encoder_base_channels]
    for b in downs:
        widths.append(widths[-1] * (b.multiplier or 2))
    factor, residual = ups[0].multiplier or 1, ups[0].residual
    # Width entering each decoder up block, listed from the last executed (narrowest) to the first, as diffusers
    # lists them (it reverses the tuple).
    dec_widths = [cfg.decoder_base_channels * factor ** (i + 1) for i in range(len(ups))]
    kinds = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "latent_channels": cfg.latent_channels,
        "block_out_channels": tuple(widths),
        "down_block_types": ("LTXVideo095DownBlock3D",) * len(downs),
        "decoder_block_out_channels": tuple(dec_widths),
        "layers_per_block": tuple(b.num_layers for b in enc if b.kind == "res_x"),
        "decoder_layers_per_block": tuple(b.num_layers for b in dec if b.kind == "res_x"),
        "spatio_temporal_scaling": (True,) * len(downs),
        "decoder_spatio_temporal_scaling": (True,) * len(ups),
        "decoder_inject_noise": (False,) * (len(ups) + 1),
        "downsample_type": tuple(kinds[b.kind] for b in downs),
        "upsample_residual": (residual,) * len(ups),
        "upsample_factor": (factor,) * len(ups),
        "timestep_conditioning": cfg.timestep_conditioning,
        "patch_size": cfg.patch_size,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "scaling_factor": 1.0,
        "encoder_causal": True,
        "decoder_causal": cfg.causal_decoder,
        # Its default counts every down block as 2x in space and time; 0.9.5's are split into space and time ones.
        "spatial_compression_ratio": cfg.spatial_compression,
        "temporal_compression_ratio": cfg.temporal_compression,
    }


def convert_vae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VAE keys -> diffusers' keys, by diffusers' converter with its 0.9.5+ table. The converter chooses that
    table by the encoder's output width (2048 at the real size), so a narrower VAE of the same layout is shown a
    stand-in of that width for the choice, and gets its own tensor back after."""
    sd = _prefixed(state_dict, _VAE_PREFIX)
    probe = _VAE_PREFIX + "encoder.conv_out.conv.weight"
    real = sd[probe]
    sd[probe] = torch.empty(real.shape[0], _CONVERTER_095_WIDTH, *real.shape[2:], device="meta")
    converted = convert_ltx_vae_checkpoint_to_diffusers(sd)
    converted["encoder.conv_out.conv.weight"] = real
    return converted


def diffusers_vae(state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig) -> AutoencoderKLLTXVideo:
    """diffusers' VAE holding the same weights as ltxv's ``VideoVAE(cfg)`` with ``state_dict``."""
    return _build(AutoencoderKLLTXVideo, vae_config(cfg), convert_vae_state_dict(state_dict))


# --------------------------------------------------------------------------------------------------------------------
# Latent upsampler
# --------------------------------------------------------------------------------------------------------------------


def diffusers_upsampler(state_dict: Mapping[str, torch.Tensor], cfg: UpsamplerConfig) -> LTXLatentUpsamplerModel:
    """diffusers' latent upsampler; its key names are the official ones."""
    config = {
        "in_channels": cfg.in_channels,
        "mid_channels": cfg.mid_channels,
        "num_blocks_per_stage": cfg.num_blocks_per_stage,
        "dims": cfg.dims,
        "spatial_upsample": cfg.spatial_upsample,
        "temporal_upsample": cfg.temporal_upsample,
    }
    return _build(LTXLatentUpsamplerModel, config, dict(state_dict))
