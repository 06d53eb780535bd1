"""Loading the official single-file checkpoints, unchanged.

A single file holds the transformer (``model.diffusion_model.*``) and the VAE (``vae.*``) with their configs in
``metadata["config"]``; the latent upsampler is a separate file whose keys have no prefix and whose metadata config is
its own. Every network is built on the meta device from the file's config, checked key by key and shape by shape
against the header *before* any tensor data is read, then filled with ``load_state_dict(strict=True, assign=True)``.
Any problem raises :class:`LoadError`; nothing is returned half-loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltxv.config import CheckpointConfig, ConfigError, UpsamplerConfig, parse_metadata_config
from ltxv.model.transformer import Transformer
from ltxv.model.upsampler import LatentUpsampler
from ltxv.model.vae import VideoVAE
from ltxv.weights.errors import LoadError
from ltxv.weights.safetensors_file import SafetensorsHeader, read_header, read_tensors

log = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
# The VAE statistics block also stores `channel` and `mean-of-stds` columns; only the two below are used (as the
# reference, which drops every other `per_channel_statistics.*` entry).
_VAE_STATS = "per_channel_statistics."
_VAE_STATS_USED = {"per_channel_statistics.mean-of-means", "per_channel_statistics.std-of-means"}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class Models:
    """The loaded networks. ``upsampler`` is None when no upsampler file was given."""

    transformer: Transformer
    vae: VideoVAE
    upsampler: LatentUpsampler | None
    config: CheckpointConfig


def _listing(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_module(
    header: SafetensorsHeader,
    build: Callable[[], nn.Module],
    names: dict[str, str],
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str,
) -> nn.Module:
    """Build ``build()`` on the meta device and fill it strictly from the file tensors ``names`` maps (file name ->
    state-dict name)."""
    with torch.device("meta"):
        model = build()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {target: header.tensors[name].shape for name, target in names.items()}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
        raise LoadError(f"{header.path}: the {what} weights do not match its config: " + "; ".join(parts))
    wrong = [
        f"{k} is {list(given[k])}, expected {list(expected[k])}" for k in sorted(expected) if given[k] != expected[k]
    ]
    if wrong:
        raise LoadError(f"{header.path}: {what} tensor(s) of the wrong shape: {_listing(wrong, 3)}")
    tensors = read_tensors(header, names, dtype=dtype)
    model.load_state_dict(tensors, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a module state outside the state dict; a bug in ltxv, not in the file
        raise RuntimeError(f"{what}: tensors not materialised by the checkpoint: {_listing(leftover)}")
    return model.requires_grad_(False).eval().to(device)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in _DTYPES]}, got {dtype}")


def read_checkpoint_config(header: SafetensorsHeader) -> CheckpointConfig:
    try:
        return CheckpointConfig.from_metadata(header.metadata)
    except ConfigError as e:
        raise LoadError(f"{header.path}: {e}") from None


def _split_single_file(header: SafetensorsHeader) -> tuple[dict[str, str], dict[str, str]]:
    transformer, vae, stray = {}, {}, []
    for name in header.tensors:
        if name.startswith(TRANSFORMER_PREFIX):
            transformer[name] = name[len(TRANSFORMER_PREFIX) :]
        elif name.startswith(VAE_PREFIX):
            local = name[len(VAE_PREFIX) :]
            if not local.startswith(_VAE_STATS) or local in _VAE_STATS_USED:
                vae[name] = local
        else:
            stray.append(name)
    if stray:
        raise LoadError(
            f"{header.path}: unexpected {len(stray)} key(s) outside '{TRANSFORMER_PREFIX}*' and '{VAE_PREFIX}*': "
            f"{_listing(sorted(stray))}"
        )
    return transformer, vae


def load_upsampler(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LatentUpsampler:
    """Load a latent upsampler file (keys without prefix, its own config in the metadata). Raw latents in and out."""
    _check_dtype(dtype)
    return _load_upsampler(read_header(path), dtype, device)


def _load_upsampler(header: SafetensorsHeader, dtype: torch.dtype, device: torch.device | str) -> LatentUpsampler:
    try:
        cfg = UpsamplerConfig.from_dict(parse_metadata_config(header.metadata))
    except ConfigError as e:
        raise LoadError(f"{header.path}: {e}") from None
    names = {name: name for name in header.tensors}
    model = load_module(header, lambda: LatentUpsampler(cfg), names, what="upsampler", dtype=dtype, device=device)
    assert isinstance(model, LatentUpsampler)
    return model


def load_models(
    checkpoint: str | Path,
    upsampler: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Models:
    """Load the transformer and VAE of an official single-file checkpoint, and optionally the latent upsampler.

    ``dtype`` is the compute dtype every floating-point weight is cast to (float32, bfloat16 or float16). The returned
    upsampler takes and returns *normalised* latents (it carries the VAE's per-channel statistics), as the multi-scale
    pipeline uses it.
    """
    _check_dtype(dtype)
    header = read_header(checkpoint)
    cfg = read_checkpoint_config(header)
    t_names, v_names = _split_single_file(header)
    # Validate the upsampler file before the (large) single file is read, so a bad path fails fast.
    up_header = read_header(upsampler) if upsampler is not None else None
    transformer = load_module(
        header, lambda: Transformer(cfg.transformer), t_names, what="transformer", dtype=dtype, device=device
    )
    vae = load_module(header, lambda: VideoVAE(cfg.vae), v_names, what="VAE", dtype=dtype, device=device)
    up = None
    if up_header is not None:
        up = _load_upsampler(up_header, dtype, device)
        if up.cfg.in_channels != cfg.vae.latent_channels:
            raise LoadError(
                f"{up_header.path}: upsampler has {up.cfg.in_channels} latent channels, the VAE {cfg.vae.latent_channels}"
            )
        stats = vae.state_dict()
        up.set_latent_statistics(
            stats["per_channel_statistics.mean-of-means"], stats["per_channel_statistics.std-of-means"]
        )
    log.info("loaded %s (%s, %s)", header.path.name, dtype, device)
    return Models(transformer=transformer, vae=vae, upsampler=up, config=cfg)  # type: ignore[arg-type]
