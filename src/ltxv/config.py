"""Network configs, parsed from the checkpoint's own ``metadata["config"]``.

The official single-file checkpoints carry a JSON document in their safetensors metadata:
``{"transformer": {...}, "vae": {...}, "scheduler": {...}, "allowed_inference_steps": [...]}``; the latent upsampler
file carries its own config directly. Each network gets one frozen dataclass here. Parsing is strict: a key we do not
know, or a value we do not implement, raises :class:`ConfigError` naming it, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A checkpoint config that ltxv cannot honour (unknown key, unsupported value, missing field)."""


def _check_known(section: str, raw: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{section} config: unsupported key(s) {unknown}")


def _require(section: str, raw: Mapping[str, Any], key: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{section} config: missing required key {key!r}")
    return raw[key]


def _expect(section: str, raw: Mapping[str, Any], key: str, allowed: tuple[Any, ...]) -> None:
    """A key whose only effect we implement is one of ``allowed`` (when present)."""
    if key in raw and raw[key] not in allowed:
        raise ConfigError(f"{section} config: {key}={raw[key]!r} is not supported (supported: {list(allowed)})")


# --------------------------------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------------------------------

# Keys the reference writes into the metadata that have no effect on the network we build (bookkeeping, or features of
# the diffusers base class that are fixed to one value in every LTX-Video checkpoint and checked by _expect below).
_TRANSFORMER_BOOKKEEPING = {
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "num_embeds_ada_norm",
    "norm_num_groups",
}


@dataclass(frozen=True)
class TransformerConfig:
    """The ``Transformer3DModel`` hyper-parameters (reference ``transformer3d.py``)."""

    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    in_channels: int = 128
    out_channels: int = 128
    cross_attention_dim: int = 2048
    caption_channels: int = 4096
    attention_bias: bool = True
    attention_out_bias: bool = True
    norm_eps: float = 1e-6
    qk_norm_eps: float = 1e-5
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: tuple[float, float, float] = (20.0, 2048.0, 2048.0)
    timestep_scale_multiplier: float = 1000.0
    causal_temporal_positioning: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TransformerConfig:
        s = "transformer"
        fields_ = {f.name for f in dataclasses.fields(cls)} - {"qk_norm_eps"}
        fixed = {
            "activation_fn": ("gelu-approximate",),
            "attention_type": ("default",),
            "dropout": (0.0, 0),
            "norm_elementwise_affine": (False,),
            "qk_norm": ("rms_norm",),
            "standardization_norm": ("rms_norm",),
            "adaptive_norm": ("single_scale_shift",),
            "positional_embedding_type": ("rope",),
            "only_cross_attention": (False,),
            "double_self_attention": (False,),
            "upcast_attention": (False,),
            "use_linear_projection": (False,),
            "num_vector_embeds": (None,),
            "use_tpu_flash_attention": (False,),
            "project_to_2d_pos": (True, False),  # legacy flag, no effect in the rope model
        }
        _check_known(s, raw, fields_ | set(fixed) | _TRANSFORMER_BOOKKEEPING)
        for key, allowed in fixed.items():
            _expect(s, raw, key, allowed)
        for key in ("num_layers", "num_attention_heads", "attention_head_dim"):
            _require(s, raw, key)
        if raw.get("positional_embedding_type", "rope") == "rope":
            _require(s, raw, "positional_embedding_theta")
            _require(s, raw, "positional_embedding_max_pos")
        kwargs = {k: raw[k] for k in fields_ if k in raw and raw[k] is not None}
        if "positional_embedding_max_pos" in kwargs:
            kwargs["positional_embedding_max_pos"] = tuple(float(v) for v in kwargs["positional_embedding_max_pos"])
        cfg = cls(**kwargs)
        inner = cfg.inner_dim
        if cfg.cross_attention_dim != inner:
            raise ConfigError(
                f"{s} config: cross_attention_dim={cfg.cross_attention_dim} must equal heads*head_dim={inner}"
            )
        if len(cfg.positional_embedding_max_pos) != 3:
            raise ConfigError(f"{s} config: positional_embedding_max_pos must have 3 entries (t, y, x)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The metadata form the reference writes (and reads back with ``Transformer3DModel.from_config``)."""
        return {
            "_class_name": "Transformer3DModel",
            "_diffusers_version": "0.25.1",
            "activation_fn": "gelu-approximate",
            "attention_bias": self.attention_bias,
            "attention_head_dim": self.attention_head_dim,
            "attention_type": "default",
            "caption_channels": self.caption_channels,
            "cross_attention_dim": self.cross_attention_dim,
            "double_self_attention": False,
            "dropout": 0.0,
            "in_channels": self.in_channels,
            "norm_elementwise_affine": False,
            "norm_eps": self.norm_eps,
            "norm_num_groups": 32,
            "num_attention_heads": self.num_attention_heads,
            "num_embeds_ada_norm": 1000,
            "num_layers": self.num_layers,
            "num_vector_embeds": None,
            "only_cross_attention": False,
            "out_channels": self.out_channels,
            "upcast_attention": False,
            "use_linear_projection": False,
            "qk_norm": "rms_norm",
            "standardization_norm": "rms_norm",
            "positional_embedding_type": "rope",
            "positional_embedding_theta": self.positional_embedding_theta,
            "positional_embedding_max_pos": [
                int(v) if float(v).is_integer() else v for v in self.positional_embedding_max_pos
            ],
            "timestep_scale_multiplier": self.timestep_scale_multiplier,
            "causal_temporal_positioning": self.causal_temporal_positioning,
        }


# --------------------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------------------

VAE_BLOCK_KINDS = (
    "res_x",  # UNetMidBlock3D: num_layers resnets (decoder: optional noise injection, timestep conditioning)
    "res_x_y",  # one resnet that changes width (0.9.0/0.9.1 layouts)
    "compress_time",  # strided causal conv (time)
    "compress_space",  # strided causal conv (space)
    "compress_all",  # encoder: strided causal conv; decoder: depth-to-space upsample (optionally residual)
    "compress_all_x_y",  # strided causal conv that also widens
    "compress_all_res",  # space-to-depth downsample with a residual (0.9.5+ encoder)
    "compress_space_res",
    "compress_time_res",
)


@dataclass(frozen=True)
class VAEBlock:
    """One entry of the reference's block-list DSL, ``[name, {params}]`` (or the legacy ``[name, num_layers]``)."""

    kind: str
    num_layers: int = 1
    multiplier: int | None = (
        None  # None: the reference's per-block default (2 encoder side, 1 for decoder compress_all)
    )
    residual: bool = False
    inject_noise: bool = False

    @classmethod
    def from_raw(cls, raw: Any) -> VAEBlock:
        if not (isinstance(raw, (list, tuple)) and len(raw) == 2 and isinstance(raw[0], str)):
            raise ConfigError(f"vae config: block {raw!r} is not a [name, params] pair")
        kind, params = raw
        if kind == "attn_res_x":
            raise ConfigError("vae config: block 'attn_res_x' (attention in the VAE) is not supported")
        if kind not in VAE_BLOCK_KINDS:
            raise ConfigError(f"vae config: unknown block kind {kind!r}")
        if isinstance(params, int):
            return cls(kind=kind, num_layers=params)
        if not isinstance(params, Mapping):
            raise ConfigError(f"vae config: block {kind!r} params must be an int or a dict, got {params!r}")
        _check_known(f"vae block {kind!r}", params, {"num_layers", "multiplier", "residual", "inject_noise"})
        return cls(
            kind=kind,
            num_layers=int(params.get("num_layers", 1)),
            multiplier=params.get("multiplier"),
            residual=bool(params.get("residual", False)),
            inject_noise=bool(params.get("inject_noise", False)),
        )

    def to_raw(self) -> list[Any]:
        params: dict[str, Any] = {}
        if self.kind in ("res_x",):
            params["num_layers"] = self.num_layers
            params["inject_noise"] = self.inject_noise
        if self.multiplier is not None:
            params["multiplier"] = self.multiplier
        if self.residual:
            params["residual"] = True
        return [self.kind, params]


_VAE_BOOKKEEPING = {"_class_name", "_diffusers_version", "scaling_factor", "double_z"}


@dataclass(frozen=True)
class VAEConfig:
    """The ``CausalVideoAutoencoder`` hyper-parameters (reference ``causal_video_autoencoder.py``)."""

    encoder_blocks: tuple[VAEBlock, ...]
    decoder_blocks: tuple[VAEBlock, ...]
    latent_channels: int = 128
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int = 4
    norm_layer: str = "pixel_norm"  # or "group_norm"
    latent_log_var: str = "uniform"  # "per_channel" | "uniform" | "constant" | "none"
    use_quant_conv: bool = False
    normalize_latent_channels: bool = False
    causal_decoder: bool = False
    timestep_conditioning: bool = False
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    spatial_padding_mode: str = "zeros"

    @property
    def spatial_compression(self) -> int:
        n = sum(
            b.kind in ("compress_space", "compress_all", "compress_all_x_y", "compress_all_res", "compress_space_res")
            for b in self.encoder_blocks
        )
        return self.patch_size * 2**n

    @property
    def temporal_compression(self) -> int:
        n = sum(
            b.kind in ("compress_time", "compress_all", "compress_all_x_y", "compress_all_res", "compress_time_res")
            for b in self.encoder_blocks
        )
        return 2**n

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VAEConfig:
        s = "vae"
        if raw.get("_class_name", "CausalVideoAutoencoder") != "CausalVideoAutoencoder":
            raise ConfigError(
                f"unsupported VAE version: _class_name={raw.get('_class_name')!r} (need CausalVideoAutoencoder)"
            )
        fields_ = {f.name for f in dataclasses.fields(cls)}
        _check_known(s, raw, fields_ | _VAE_BOOKKEEPING | {"dims", "blocks"})
        _expect(s, raw, "dims", (3, [3], (3,)))
        _expect(s, raw, "norm_layer", ("pixel_norm", "group_norm"))
        _expect(s, raw, "latent_log_var", ("per_channel", "uniform", "constant", "none"))
        _expect(s, raw, "spatial_padding_mode", ("zeros", "reflect", "replicate", "circular"))
        shared = raw.get("blocks")
        enc = raw.get("encoder_blocks", shared)
        dec = raw.get("decoder_blocks", shared)
        if enc is None or dec is None:
            raise ConfigError(f"{s} config: missing required key 'encoder_blocks'/'decoder_blocks' (or 'blocks')")
        double_z = raw.get("double_z", True)
        kwargs = {k: raw[k] for k in fields_ - {"encoder_blocks", "decoder_blocks"} if k in raw}
        kwargs.setdefault("latent_log_var", "per_channel" if double_z else "none")
        kwargs.setdefault("use_quant_conv", True)
        kwargs.setdefault("norm_layer", "group_norm")
        kwargs.setdefault("patch_size", 1)
        _require(s, raw, "latent_channels")
        cfg = cls(
            encoder_blocks=tuple(VAEBlock.from_raw(b) for b in enc),
            decoder_blocks=tuple(VAEBlock.from_raw(b) for b in dec),
            **kwargs,
        )
        if cfg.use_quant_conv and cfg.latent_log_var in ("uniform", "constant"):
            raise ConfigError(f"{s} config: latent_log_var={cfg.latent_log_var!r} requires use_quant_conv=false")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            "_class_name": "CausalVideoAutoencoder",
            "dims": 3,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "encoder_blocks": [b.to_raw() for b in self.encoder_blocks],
            "decoder_blocks": [b.to_raw() for b in self.decoder_blocks],
            "scaling_factor": 1.0,
            "norm_layer": self.norm_layer,
            "patch_size": self.patch_size,
            "latent_log_var": self.latent_log_var,
            "use_quant_conv": self.use_quant_conv,
            "normalize_latent_channels": self.normalize_latent_channels,
            "causal_decoder": self.causal_decoder,
            "timestep_conditioning": self.timestep_conditioning,
            "encoder_base_channels": self.encoder_base_channels,
            "decoder_base_channels": self.decoder_base_channels,
            "spatial_padding_mode": self.spatial_padding_mode,
        }


# --------------------------------------------------------------------------------------------------------------------
# Latent upsampler
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsamplerConfig:
    """The ``LatentUpsampler`` hyper-parameters (reference ``latent_upsampler.py``)."""

    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UpsamplerConfig:
        s = "upsampler"
        if raw.get("_class_name", "LatentUpsampler") != "LatentUpsampler":
            raise ConfigError(f"{s} config: _class_name={raw.get('_class_name')!r} is not a LatentUpsampler")
        fields_ = {f.name for f in dataclasses.fields(cls)}
        _check_known(s, raw, fields_ | {"_class_name", "_diffusers_version"})
        _expect(s, raw, "dims", (2, 3))
        cfg = cls(**{k: raw[k] for k in fields_ if k in raw})
        if not (cfg.spatial_upsample or cfg.temporal_upsample):
            raise ConfigError(f"{s} config: neither spatial_upsample nor temporal_upsample is set")
        if cfg.dims == 2 and cfg.temporal_upsample:
            raise ConfigError(f"{s} config: temporal_upsample needs dims=3")
        if cfg.mid_channels % 32:
            raise ConfigError(f"{s} config: mid_channels={cfg.mid_channels} must be a multiple of 32 (GroupNorm(32))")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {"_class_name": "LatentUpsampler", **dataclasses.asdict(self)}


# --------------------------------------------------------------------------------------------------------------------
# Scheduler and the whole checkpoint
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfig:
    """The ``RectifiedFlowScheduler`` settings (reference ``rf.py``)."""

    sampler: str = "LinearQuadratic"  # "Uniform" | "LinearQuadratic" | "Constant"
    shifting: str | None = None  # None | "SD3" | "SimpleDiffusion"
    base_resolution: int | None = None
    target_shift_terminal: float | None = None
    shift: float | None = None
    num_train_timesteps: int = 1000

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SchedulerConfig:
        s = "scheduler"
        fields_ = {f.name for f in dataclasses.fields(cls)}
        _check_known(s, raw, fields_ | {"_class_name", "_diffusers_version"})
        _expect(s, raw, "sampler", ("Uniform", "LinearQuadratic", "Constant"))
        _expect(s, raw, "shifting", (None, "SD3", "SimpleDiffusion"))
        kwargs = {k: raw[k] for k in fields_ if k in raw}
        # The reference's own default when a checkpoint names no sampler is "Uniform" (rf.py).
        kwargs.setdefault("sampler", "Uniform")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CheckpointConfig:
    """Everything ``metadata["config"]`` of a single-file checkpoint says."""

    transformer: TransformerConfig
    vae: VAEConfig
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    allowed_inference_steps: tuple[float, ...] | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> CheckpointConfig:
        raw = parse_metadata_config(metadata)
        for key in ("transformer", "vae"):
            if key not in raw:
                raise ConfigError(f"checkpoint config has no {key!r} section")
        _check_known("checkpoint", raw, {"transformer", "vae", "scheduler", "allowed_inference_steps"})
        allowed = raw.get("allowed_inference_steps")
        return cls(
            transformer=TransformerConfig.from_dict(raw["transformer"]),
            vae=VAEConfig.from_dict(raw["vae"]),
            scheduler=SchedulerConfig.from_dict(raw.get("scheduler") or {}),
            allowed_inference_steps=None if allowed is None else tuple(float(t) for t in allowed),
        )

    def to_metadata(self) -> dict[str, str]:
        doc: dict[str, Any] = {
            "transformer": self.transformer.to_dict(),
            "vae": self.vae.to_dict(),
            "scheduler": self.scheduler.to_dict(),
        }
        if self.allowed_inference_steps is not None:
            doc["allowed_inference_steps"] = list(self.allowed_inference_steps)
        return {"config": json.dumps(doc)}


def parse_metadata_config(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    if not metadata or "config" not in metadata:
        raise ConfigError("the safetensors metadata has no 'config' entry; not an official LTX-Video checkpoint")
    try:
        raw = json.loads(metadata["config"])
    except json.JSONDecodeError as e:
        raise ConfigError(f"the safetensors metadata 'config' is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("the safetensors metadata 'config' is not a JSON object")
    return raw


# --------------------------------------------------------------------------------------------------------------------
# The real sizes, by name
# --------------------------------------------------------------------------------------------------------------------

TRANSFORMER_2B = TransformerConfig(
    num_layers=28,
    num_attention_heads=32,
    attention_head_dim=64,
    cross_attention_dim=2048,
    causal_temporal_positioning=True,
)
TRANSFORMER_13B = TransformerConfig(
    num_layers=48,
    num_attention_heads=32,
    attention_head_dim=128,
    cross_attention_dim=4096,
    causal_temporal_positioning=True,
)


def vae_blocks(*raw: Any) -> tuple[VAEBlock, ...]:
    """Blocks from the metadata DSL, ``[name, params]`` pairs."""
    return tuple(VAEBlock.from_raw(b) for b in raw)


# The VAE of 0.9.5 .. 0.9.8 (reference study §2.4).
VAE_0_9_5 = VAEConfig(
    encoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ),
    decoder_blocks=vae_blocks(
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ),
    latent_channels=128,
    patch_size=4,
    norm_layer="pixel_norm",
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
    timestep_conditioning=True,
)

UPSAMPLER_SPATIAL = UpsamplerConfig(
    in_channels=128, mid_channels=512, num_blocks_per_stage=4, dims=3, spatial_upsample=True
)
UPSAMPLER_TEMPORAL = UpsamplerConfig(
    in_channels=128, mid_channels=512, num_blocks_per_stage=4, dims=3, spatial_upsample=False, temporal_upsample=True
)

KNOWN_TRANSFORMERS: dict[str, TransformerConfig] = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B}
