"""Loading the official single-file checkpoints, unchanged.

A single file holds the transformer (``model.diffusion_model.*``) and the VAE (``vae.*``) with their configs in
``metadata["config"]``; the latent upsampler is a separate file whose keys have no prefix and whose metadata config is
its own. Every network is built on the meta device from the file's config, checked key by key and shape by shape
against the header *before* any tensor data is read, then filled with ``load_state_dict(strict=True, assign=True)``.
Any problem raises :class:`LoadError`; nothing is returned half-loaded.

FP8: the transformer blocks' attention and feed-forward linears become :class:`~ltxv.quant.fp8.Fp8Linear` s on the
meta model when the file stores them in float8_e4m3fn (Lightricks' ``-fp8`` files: plain casts, no scales; a 0-dim
float32 ``<linear>.weight_scale`` each is read too), or when ``quantize="fp8"`` asks to quantise a bf16/fp32 file
tensor by tensor as it is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltxv.config import CheckpointConfig, ConfigError, UpsamplerConfig, parse_metadata_config
from ltxv.errors import LtxvError
from ltxv.model.transformer import Transformer
from ltxv.model.upsampler import LatentUpsampler
from ltxv.model.vae import VideoVAE
from ltxv.quant.fp8 import FP8, SCALE, Fp8Linear, fp8_linear_names, is_fp8_linear_name, quantize_fp8, swap_to_fp8
from ltxv.weights.errors import LoadError
from ltxv.weights.safetensors_file import (
    FLOAT8_DTYPES,
    SafetensorsHeader,
    TensorInfo,
    iter_tensors,
    read_header,
)

log = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
# The VAE statistics block also stores `channel` and `mean-of-stds` columns; only the two below are used (as the
# reference, which drops every other `per_channel_statistics.*` entry).
_VAE_STATS = "per_channel_statistics."
_VAE_STATS_USED = {"per_channel_statistics.mean-of-means", "per_channel_statistics.std-of-means"}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
QUANTIZE_MODES = ("fp8",)
# Side tensors of other quantised layouts (ComfyUI scaled fp8, static input scales, block-wise inverse scales): their
# meaning is not a plain cast, so such files are refused by name rather than guessed at.
_FOREIGN_QUANT_KEYS = frozenset({"scale_weight", "scale_input", "input_scale", "weight_scale_inv", "comfy_quant"})
_FP8_HINT = (
    "ltxv reads float8_e4m3fn weights of the transformer blocks' attention and feed-forward linears (as Lightricks' "
    f"-fp8 files store them), optionally with a 0-dim float32 '<linear>.{SCALE}' each"
)


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


def _checked(
    header: SafetensorsHeader, build: Callable[[], nn.Module], names: dict[str, str], what: str
) -> tuple[nn.Module, dict[str, TensorInfo], set[str]]:
    """``build()`` on the meta device, checked key by key, shape by shape and fp8 dtype by dtype against the file
    tensors ``names`` maps (file name -> state-dict name); returns it with the stored tensors' infos by target name and
    the weights to quantise as they are read."""
    with torch.device("meta"):
        model = build()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {target: header.tensors[name] for name, target in names.items()}
    given = {target: info.shape for target, info in stored.items()}
    fp8_layers = {n: m for n, m in model.named_modules() if isinstance(m, Fp8Linear)}
    quantize = {
        f"{n}.weight"
        for n, m in fp8_layers.items()
        if m.scaled and f"{n}.weight" in stored and stored[f"{n}.weight"].dtype not in FLOAT8_DTYPES
    }
    given |= {w.removesuffix("weight") + SCALE: () for w in quantize}  # produced by the quantisation, not the file
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
    _check_fp8_dtypes(header, stored, fp8_layers, quantize, what)
    return model, stored, quantize


def _load_dtypes(model: nn.Module, stored: dict[str, TensorInfo], dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype each state-dict tensor is read in: floating ones in the compute dtype, fp8 ones as stored, a scale
    (not a weight) in float32 always."""
    scales = {f"{n}.{SCALE}" for n, m in model.named_modules() if isinstance(m, Fp8Linear) and m.scaled}
    want = {t: dtype for t, info in stored.items() if info.dtype.is_floating_point and info.dtype not in FLOAT8_DTYPES}
    return want | {t: torch.float32 for t in scales if t in stored}


def load_module(
    header: SafetensorsHeader,
    build: Callable[[], nn.Module],
    names: dict[str, str],
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str,
    defer: str | None = None,
) -> nn.Module:
    """Build ``build()`` on the meta device and fill it strictly from the file tensors ``names`` maps (file name ->
    state-dict name).

    ``defer``: a sub-module name whose tensors are checked now but read only when asked: it stays on the meta device
    and the returned model's ``deferred_tensors`` (a callable) reads them (see :func:`load_models`).

    Float8 file tensors are accepted only as the ``weight`` of an :class:`Fp8Linear` of the built model, and kept as
    stored. A scaled :class:`Fp8Linear` whose weight the file holds in higher precision is quantised as it is read,
    one tensor at a time: cast to ``dtype`` first, so the result equals loading and then ``quantize_``.
    """
    model, stored, quantize = _checked(header, build, names, what)
    want = _load_dtypes(model, stored, dtype)

    def read(selected: dict[str, str]) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for target, t in iter_tensors(header, selected, want):
            if target in quantize:
                tensors[target], tensors[target.removesuffix("weight") + SCALE] = quantize_fp8(t)
            else:
                tensors[target] = t
        return tensors

    prefix = f"{defer}." if defer else None
    later = {n: t for n, t in names.items() if prefix and t.startswith(prefix)}
    model.load_state_dict(read({n: t for n, t in names.items() if n not in later}), strict=not later, assign=True)
    leftover = [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_meta and not (prefix and n.startswith(prefix))
    ]
    if leftover:  # a module state outside the state dict; a bug in ltxv, not in the file
        raise RuntimeError(f"{what}: tensors not materialised by the checkpoint: {_listing(leftover)}")
    model.requires_grad_(False).eval()
    if not later:
        return model.to(device)
    for name, child in model.named_children():  # the deferred module stays on the meta device, in the compute dtype
        if name == defer:
            child.to(dtype)
        else:
            child.to(device)
    model.deferred_tensors = lambda: {t.removeprefix(prefix): v for t, v in read(later).items()}  # type: ignore[union-attr]
    return model


def _check_fp8_dtypes(
    header: SafetensorsHeader,
    stored: dict[str, TensorInfo],
    fp8_layers: dict[str, Fp8Linear],
    quantize: set[str],
    what: str,
) -> None:
    weights = {f"{n}.weight" for n in fp8_layers}
    misplaced = sorted(t for t, info in stored.items() if info.dtype in FLOAT8_DTYPES and t not in weights)
    if misplaced:
        raise LoadError(
            f"{header.path}: {what} tensor(s) stored as float8 where ltxv has no fp8 layer: {_listing(misplaced)}; "
            + _FP8_HINT
        )
    other = sorted(f"{w} is {stored[w].dtype}" for w in weights - quantize if stored[w].dtype != FP8)
    if other:  # float8_e5m2, or a plain-cast layer given a high-precision weight (a bug in the caller's plan)
        raise LoadError(f"{header.path}: {what} fp8 layer weight(s) of an unsupported dtype: {_listing(other, 3)}")


def _stored_fp8(header: SafetensorsHeader, names: dict[str, str]) -> tuple[frozenset[str], bool]:
    """The transformer linears (module names) the file stores in float8, and whether it stores a per-tensor
    ``weight_scale`` for each of them. Other quantisation layouts are refused here by key name."""
    dtypes = {target: header.tensors[name].dtype for name, target in names.items()}
    foreign = sorted(t for t in dtypes if t.rsplit(".", 1)[-1] in _FOREIGN_QUANT_KEYS)
    if foreign:
        raise LoadError(
            f"{header.path}: quantisation tensors of a layout ltxv does not read: {_listing(foreign)}; " + _FP8_HINT
        )
    linears = frozenset(
        t.removesuffix(".weight")
        for t, d in dtypes.items()
        if d in FLOAT8_DTYPES and t.endswith(".weight") and is_fp8_linear_name(t.removesuffix(".weight"))
    )
    scaled = frozenset(t.removesuffix("." + SCALE) for t in dtypes if t.endswith("." + SCALE))
    if scaled and scaled != linears:
        raise LoadError(
            f"{header.path}: '{SCALE}' entries must come with exactly the fp8 linear weights: {len(scaled)} "
            f"scale(s) for {len(linears)} fp8 weight(s), unmatched: {_listing(sorted(scaled ^ linears))}"
        )
    return linears, bool(scaled)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _DTYPES:
        raise LtxvError(f"dtype must be one of {[str(d) for d in _DTYPES]}, got {dtype!r}", param="dtype")


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


def _upsampler_config(header: SafetensorsHeader) -> UpsamplerConfig:
    try:
        return UpsamplerConfig.from_dict(parse_metadata_config(header.metadata))
    except ConfigError as e:
        raise LoadError(f"{header.path}: {e}") from None


def _check_upsampler_fits(up: UpsamplerConfig, cfg: CheckpointConfig, path: Path) -> None:
    if up.in_channels != cfg.vae.latent_channels:
        raise LoadError(f"{path}: upsampler has {up.in_channels} latent channels, the VAE {cfg.vae.latent_channels}")


def _check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise LtxvError(f"quantize must be None or one of {list(QUANTIZE_MODES)}, got {quantize!r}", param="quantize")


def _transformer_builder(
    cfg: CheckpointConfig, stored_fp8: frozenset[str], scaled: bool, quantize: str | None
) -> Callable[[], Transformer]:
    def build() -> Transformer:
        model = Transformer(cfg.transformer)
        if stored_fp8:  # names the model lacks stay out, so the strict key check reports them
            swap_to_fp8(model, [n for n in fp8_linear_names(model) if n in stored_fp8], scaled=scaled)
        elif quantize == "fp8":
            swap_to_fp8(model, scaled=True)
        return model

    return build


def _meta_module(
    header: SafetensorsHeader, build: Callable[[], nn.Module], names: dict[str, str], what: str, dtype: torch.dtype
) -> nn.Module:
    """``build()`` checked against the header as :func:`load_module` checks it, left on the meta device with every
    state tensor in the dtype it would be read in."""
    model, stored, quantize = _checked(header, build, names, what)
    want = {t: d for t, d in _load_dtypes(model, stored, dtype).items() if t not in quantize}  # those become fp8
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for key, t in [*module._parameters.items(), *module._buffers.items()]:
            if t is not None and prefix + key in want and t.dtype != want[prefix + key]:
                t.data = torch.empty(t.shape, dtype=want[prefix + key], device="meta")
    return model.requires_grad_(False).eval()


def _resolve(checkpoint: str | Path, upsampler: str | Path | None) -> tuple[Path, Path | None]:
    """Local paths as they are; the names of released files from the Hugging Face cache (or downloaded)."""
    from ltxv.weights.hub import resolve

    return resolve(checkpoint, "checkpoint"), None if upsampler is None else resolve(upsampler, "upsampler")


def plan_models(
    checkpoint: str | Path,
    upsampler: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
) -> Models:
    """What :func:`load_models` would build, without reading any tensor data: every network constructed on the meta
    device from its file's config, checked key by key, shape by shape and dtype by dtype against the file's header,
    each tensor in the dtype it would be loaded in (so :func:`ltxv.quant.fp8.module_bytes` gives the loaded sizes).
    Raises the :class:`LoadError` the load would raise for any problem the headers show."""
    _check_dtype(dtype)
    _check_quantize(quantize)
    checkpoint, upsampler = _resolve(checkpoint, upsampler)
    header = read_header(checkpoint)
    cfg = read_checkpoint_config(header)
    t_names, v_names = _split_single_file(header)
    stored_fp8, scaled = _stored_fp8(header, t_names)
    up_header = read_header(upsampler) if upsampler is not None else None
    up_cfg = _upsampler_config(up_header) if up_header is not None else None
    if up_cfg is not None:
        _check_upsampler_fits(up_cfg, cfg, up_header.path)  # type: ignore[union-attr]
    build = _transformer_builder(cfg, stored_fp8, scaled, quantize)
    transformer = _meta_module(header, build, t_names, "transformer", dtype)
    vae = _meta_module(header, lambda: VideoVAE(cfg.vae), v_names, "VAE", dtype)
    up = None
    if up_header is not None:
        names = {name: name for name in up_header.tensors}
        up = _meta_module(up_header, lambda: LatentUpsampler(up_cfg), names, "upsampler", dtype)
        mean, std = vae.per_channel_statistics.mean_std()  # type: ignore[operator]
        up.set_latent_statistics(mean, std)  # type: ignore[operator]
    return Models(transformer=transformer, vae=vae, upsampler=up, config=cfg)  # type: ignore[arg-type]


def load_upsampler(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LatentUpsampler:
    """Load a latent upsampler file (keys without prefix, its own config in the metadata). Raw latents in and out."""
    _check_dtype(dtype)
    return _load_upsampler(read_header(path), dtype, device)


def _load_upsampler(header: SafetensorsHeader, dtype: torch.dtype, device: torch.device | str) -> LatentUpsampler:
    cfg = _upsampler_config(header)
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
    quantize: str | None = None,
    lazy_vae_encoder: bool = False,
) -> Models:
    """Load the transformer and VAE of an official single-file checkpoint, and optionally the latent upsampler
    (paths, or the names of released files: resolved as :func:`ltxv.weights.hub.resolve` does).

        ``dtype`` is the compute dtype every floating-point weight is cast to (float32, bfloat16 or float16), fp8 weights
        excepted. The returned upsampler takes and returns *normalised* latents (it carries the VAE's per-channel
        statistics), as the multi-scale pipeline uses it.

        ``quantize="fp8"`` quantises the transformer blocks' attention and feed-forward weights of a bf16/fp32 checkpoint
        to float8_e4m3fn with a per-tensor scale as they are read. A checkpoint that stores them in fp8 already (the
        ``-fp8`` files) is loaded as stored, fp8 weights kept, whatever ``quantize`` says; ``None`` means "as stored".

        ``lazy_vae_encoder``: the VAE encoder's weights (0.69 B parameters in the released VAE, 1.4 GB in bf16) are
        checked now but read from the file only when something is first encoded (image or video conditioning), onto the
        VAE's device at that moment: text-to-video never holds them. The file must still be there then.
    """
    _check_dtype(dtype)
    _check_quantize(quantize)
    checkpoint, upsampler = _resolve(checkpoint, upsampler)
    header = read_header(checkpoint)
    cfg = read_checkpoint_config(header)
    t_names, v_names = _split_single_file(header)
    stored_fp8, scaled = _stored_fp8(header, t_names)
    if stored_fp8 and quantize is not None:
        log.info("%s stores %d fp8 linears; loaded as stored", header.path.name, len(stored_fp8))
    # Validate the upsampler file before the (large) single file is read, so a bad path fails fast.
    up_header = read_header(upsampler) if upsampler is not None else None
    if up_header is not None:
        _check_upsampler_fits(_upsampler_config(up_header), cfg, up_header.path)
    build_transformer = _transformer_builder(cfg, stored_fp8, scaled, quantize)

    transformer = load_module(header, build_transformer, t_names, what="transformer", dtype=dtype, device=device)
    vae = load_module(
        header,
        lambda: VideoVAE(cfg.vae),
        v_names,
        what="VAE",
        dtype=dtype,
        device=device,
        defer="encoder" if lazy_vae_encoder else None,
    )
    up = None
    if up_header is not None:
        up = _load_upsampler(up_header, dtype, device)
        stats = vae.state_dict()
        up.set_latent_statistics(
            stats["per_channel_statistics.mean-of-means"], stats["per_channel_statistics.std-of-means"]
        )
    fp8 = "fp8 as stored" if stored_fp8 else ("fp8 quantised" if quantize else "")
    log.info("loaded %s (%s, %s%s)", header.path.name, dtype, device, f", {fp8}" if fp8 else "")
    return Models(transformer=transformer, vae=vae, upsampler=up, config=cfg)  # type: ignore[arg-type]


def _transformer_file(
    checkpoint: str | Path, quantize: str | None
) -> tuple[SafetensorsHeader, CheckpointConfig, dict[str, str], Callable[[], Transformer]]:
    header = read_header(checkpoint)
    cfg = read_checkpoint_config(header)
    t_names, _ = _split_single_file(header)
    stored_fp8, scaled = _stored_fp8(header, t_names)
    return header, cfg, t_names, _transformer_builder(cfg, stored_fp8, scaled, quantize)


def plan_transformer(
    checkpoint: str | Path, *, dtype: torch.dtype = torch.float32, quantize: str | None = None
) -> tuple[Transformer, CheckpointConfig]:
    """What :func:`load_transformer` would build, from the header only (meta device, checked as :func:`plan_models`
    checks), and the file's config."""
    _check_dtype(dtype)
    _check_quantize(quantize)
    header, cfg, names, build = _transformer_file(checkpoint, quantize)
    return _meta_module(header, build, names, "transformer", dtype), cfg  # type: ignore[return-value]


def load_transformer(
    checkpoint: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> tuple[Transformer, CheckpointConfig]:
    """The transformer of a single-file checkpoint alone (a hybrid pipeline's further network; its VAE is not read),
    loaded as :func:`load_models` loads one, and the file's config."""
    _check_dtype(dtype)
    _check_quantize(quantize)
    header, cfg, names, build = _transformer_file(checkpoint, quantize)
    model = load_module(header, build, names, what="transformer", dtype=dtype, device=device)
    log.info("loaded the transformer of %s (%s, %s)", header.path.name, dtype, device)
    return model, cfg  # type: ignore[return-value]
