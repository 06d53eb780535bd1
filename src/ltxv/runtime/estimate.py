"""Device-memory estimates before a run: weights per model, working memory per stage, and the device peak under the
residency mode. Closed forms, instant, from the loaded modules and the request's sizes; nothing runs.

Notation: ``s`` bytes per element of the compute dtype, ``B`` = batch x guidance branches (the branches run as one
batch), ``N`` tokens of a pass, ``D`` the transformer width, ``L`` text tokens (256).

* Weights: the exact bytes of every parameter and buffer (an fp8 weight counts 1 byte per element).
* Transformer (one forward of a pass; attention is SDPA's flash / memory-efficient path, so no N x N matrix):
  ``U = B N D s``; the residual stream plus the six D-wide tensors alive at a block's peak (in self-attention the
  normalised input, q, k, v, the attention output and its projection; in the MLP the normalised input, the 4D hidden
  and the output) make ``7 U``; with per-token timesteps (any conditioning item) the AdaLN modulation is per token,
  ``6 D`` plus the ``D`` embedding and one table row built on use: ``8 U`` more. Plus the RoPE tables, ``2 N D s`` per
  distinct position set, and the cached cross-attention keys/values of every block, ``layers x 2 B L D s``.
* VAE, one shot: the widest activation ``A`` (channels x frames x height x width x s over the decoder's stages: the
  last stage at full frame count dominates, 128 channels at 1/4 of the pixel size for 0.9.5+) times 5 (a resnet's
  input, normalised/modulated copy, SiLU, padded conv input and conv output), plus twice the output video (conv_out
  and its unpatchified copy). Encoding is costed the same way on the mirrored grid.
* VAE, streaming (``VideoVAE.decode(chunk_frames=...)``): the output video plus what every resnet carries (two input
  frames per temporal conv, about four frames queued for its skip connection: 8 frames of its stage, measured) plus
  one block in flight through a resnet (5 copies of a block of about ``WINDOW_FRAMES`` output frames' bytes, at
  least one frame of the widest stage).
* The pipeline's decode hands each decoded block to a sink that writes it into the result, float32 at the requested
  (cropped) size, ``F x H x W x 3 x 4`` bytes: that tensor, not the decoder's video, is what the decode stage holds
  whole (a streamed decode never holds the decoded video; a one-shot decode holds it and its float32 copy too). At
  100000 frames of 64 x 96 it is 6.9 GiB, which is what such a run allocates; the decoder's own output at the last
  pass's size in its dtype, which the estimate counted before, was a third of it.
* Latent upsampler: its widest tensor, ``mid_channels`` on the upsampled grid, times 4 (a res-block's input, conv
  output, normalised copy, SiLU), plus the pixel-shuffle's pre-shuffle copy.
* Device peak per stage = the weights on the device during it (the stage's own models plus every model the mode
  keeps resident) + the stage's working memory; the run's peak is the largest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ltxv.config import TransformerConfig, UpsamplerConfig, VAEConfig
from ltxv.model.vae_stream import WINDOW_FRAMES
from ltxv.quant.fp8 import module_bytes
from ltxv.runtime.residency import offloads

log = logging.getLogger(__name__)

TEXT_TOKENS = 256
BLOCK_TENSORS = 7  # D-wide (B, N, D) tensors alive at a transformer block's peak (see the module docstring)
TOKEN_MODULATION_TENSORS = 8  # extra D-wide tensors when timesteps are per token (6D modulation + D embedding + 1)
RESNET_COPIES = 5  # activation-sized tensors alive in a VAE resnet (input, norm, SiLU, padded input, conv output)
UPSAMPLER_COPIES = 4
STREAM_PUSH_COPIES = 5
STREAM_CARRIED_FRAMES = 8  # frames a streamed resnet holds: 2 per conv buffer, ~4 queued for the skip (measured)


@dataclass(frozen=True)
class PassShape:
    """One denoising pass as the estimate needs it."""

    height: int  # pixels
    width: int
    branches: int  # guidance branches run as one batch (1 to 3)
    per_token_timesteps: bool = False  # any conditioning item: per-token AdaLN modulation
    appended_tokens: int = 0  # keyframe tokens appended to the video's
    encode_frames: tuple[int, ...] = ()  # pixel frame counts of the media the VAE encodes at this pass's size


@dataclass(frozen=True)
class StageEstimate:
    name: str
    models: tuple[str, ...]  # the models the stage runs
    working: int  # bytes: activations and temporaries
    device_peak: int  # bytes: weights on the device during the stage + ``working``


@dataclass(frozen=True)
class MemoryEstimate:
    mode: str  # the residency mode
    weights: dict[str, int]  # bytes per model role
    stages: tuple[StageEstimate, ...]
    decode_streaming: bool

    @property
    def peak(self) -> int:
        return max(s.device_peak for s in self.stages)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda s: s.device_peak).name

    def summary(self) -> str:
        """One line, e.g. ``memory estimate (sequential): device peak 12.3 GiB in pass2; weights transformer 3.9 GiB,
        ...``; sizes under a GiB in MiB."""
        w = ", ".join(f"{k} {_size(v)}" for k, v in self.weights.items())
        st = ", ".join(f"{s.name} {_size(s.working)}" for s in self.stages)
        decode = "streaming" if self.decode_streaming else "one-shot"
        return (
            f"memory estimate ({self.mode}): device peak {_size(self.peak)} in {self.peak_stage}; "
            f"weights {w}; working {st} ({decode} decode)"
        )


def transformer_bytes(
    cfg: TransformerConfig, tokens: int, samples: int, elem: int, *, per_token: bool, batch: int = 1
) -> int:
    """Working memory of one forward over ``samples`` = batch x branches sequences of ``tokens`` tokens."""
    d = cfg.inner_dim
    u = samples * tokens * d * elem
    blocks = (BLOCK_TENSORS + (TOKEN_MODULATION_TENSORS if per_token else 0)) * u
    rope = 2 * tokens * d * elem * (1 if batch == 1 else samples)  # a batch of 1 shares one table over branches
    text = cfg.num_layers * 2 * samples * TEXT_TOKENS * d * elem
    latents = 4 * samples * tokens * cfg.in_channels * 4  # inputs, velocity and the float32 latent state
    return blocks + rope + text + latents


def decoder_stages(cfg: VAEConfig, frames: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(channels, frames, height, width) of the decoder's activation after conv_in and after each block, for a latent
    grid of ``frames`` x ``height`` x ``width`` (the channel and grid bookkeeping of ``model.vae.Decoder``)."""
    blocks = tuple(reversed(cfg.decoder_blocks))
    c = cfg.decoder_base_channels
    for b in blocks:
        c *= (b.multiplier or 2) if b.kind == "res_x_y" else (b.multiplier or 1) if b.kind.startswith("compress") else 1
    f, h, w = frames, height, width
    out = [(c, f, h, w)]
    for b in blocks:
        if b.kind == "res_x_y":
            c //= b.multiplier or 2
        elif b.kind == "compress_all":
            c, f, h, w = c // (b.multiplier or 1), 2 * f - 1, 2 * h, 2 * w
        elif b.kind == "compress_time":
            f = 2 * f - 1
        elif b.kind == "compress_space":
            h, w = 2 * h, 2 * w
        out.append((c, f, h, w))
    return out


def vae_bytes(
    cfg: VAEConfig, frames: int, height: int, width: int, elem: int, *, streaming: bool, chunk_frames: int = 1
) -> int:
    """Working memory of decoding a latent grid ``frames`` x ``height`` x ``width`` (or of encoding the video it
    decodes to, one shot), streamed ``chunk_frames`` latent frames per step or not. Includes the output video."""
    stages = decoder_stages(cfg, frames, height, width)
    _, f, h, w = stages[-1]
    p = cfg.patch_size
    out = cfg.out_channels * f * h * p * w * p * elem
    if not streaming:
        return RESNET_COPIES * max(math.prod(s) for s in stages) * elem + 2 * out
    # decode_stream's window: WINDOW_FRAMES output frames per latent frame of a chunk. Every layer takes blocks
    # of about that size (at least one of its frames), and a resnet holds a few such blocks at once; conv_out's block
    # and its unpatchified copy come on top.
    window = int(chunk_frames * WINDOW_FRAMES * out // f)
    block = max(max(window, c * h * w * elem) for c, _, h, w in stages[1:])
    layers = [b.num_layers if b.kind == "res_x" else 1 for b in reversed(cfg.decoder_blocks)]
    carried = sum(STREAM_CARRIED_FRAMES * n * c * h * w * elem for (c, _, h, w), n in zip(stages[1:], layers))
    return out + carried + STREAM_PUSH_COPIES * block + 2 * window


def upsampler_bytes(cfg: UpsamplerConfig, frames: int, height: int, width: int, elem: int) -> int:
    growth = (4 if cfg.spatial_upsample else 1) * (2 if cfg.temporal_upsample else 1)
    widest = cfg.mid_channels * frames * height * width * growth * elem
    return (UPSAMPLER_COPIES + 1) * widest


def text_encoder_bytes(d_model: int, d_ff: int, num_heads: int, elem: int) -> int:
    """T5 on one prompt of ``TEXT_TOKENS``: a few d_model-wide states, the d_ff hidden, per-head scores in float32;
    or, for a narrow encoder, the relative-position buckets (a few (L, L) int64 tensors, 6.5 L^2 x 8 bytes measured
    on the tiny one; a 512-wide, 8-head encoder measured within 1% of the first form)."""
    layers = TEXT_TOKENS * elem * (6 * d_model + 2 * d_ff) + 2 * num_heads * TEXT_TOKENS**2 * 4
    return max(layers, 13 * TEXT_TOKENS**2 * 4)


@dataclass(frozen=True)
class ModelSizes:
    """What the estimate needs to know of the models: their configs, their weights' bytes by role and the bytes per
    element they compute in. Built from loaded modules or meta-device ones alike (:meth:`of`)."""

    transformer: TransformerConfig
    vae: VAEConfig
    upsampler: UpsamplerConfig | None
    text: tuple[int, int, int] | None  # the T5's (d_model, d_ff, num_heads), None without a text encoder
    weights: dict[str, int]  # bytes per role: text_encoder, transformer, vae, upsampler
    lazy_encoder: int  # bytes of a VAE encoder read only on the first encode (0 when it is loaded)
    elem: int  # bytes per element of the transformer's compute dtype
    vae_elem: int
    text_elem: int = 4

    @classmethod
    def of(
        cls,
        models: object,
        text_encoder: object | None = None,
        *,
        lazy_encoder: bool | None = None,
        transformers: Mapping[str, object] | None = None,
    ) -> ModelSizes:
        """``models``: :class:`ltxv.weights.load.Models` (loaded or from ``plan_models``); ``text_encoder``: a
        :class:`ltxv.text.t5.TextEncoder`, a transformers T5 module or None. ``lazy_encoder``: whether the VAE
        encoder is read lazily (default: whether it is still unread). ``transformers``: a hybrid pipeline's
        transformers by label (the main one among them); the others weigh in as ``transformer:LABEL`` and the
        widest one's config sizes a pass's working memory."""
        transformer, vae, upsampler = models.transformer, models.vae, models.upsampler  # type: ignore[attr-defined]
        if lazy_encoder is None:
            lazy_encoder = getattr(vae, "deferred_tensors", None) is not None
        weights = {"transformer": module_bytes(transformer), "vae": module_bytes(vae)}
        others = {k: t for k, t in (transformers or {}).items() if t is not transformer}
        weights |= {f"transformer:{k}": module_bytes(t) for k, t in others.items()}
        widest = max([transformer, *others.values()], key=lambda t: t.cfg.inner_dim)  # type: ignore[union-attr]
        if upsampler is not None:
            weights["upsampler"] = module_bytes(upsampler)
        t5 = getattr(text_encoder, "model", text_encoder)
        text, text_elem = None, 4
        if t5 is not None:
            weights = {"text_encoder": module_bytes(t5), **weights}
            c = t5.config
            text, text_elem = (c.d_model, c.d_ff, c.num_heads), next(t5.parameters()).element_size()
        return cls(
            transformer=widest.cfg,  # type: ignore[union-attr]
            vae=vae.cfg,
            upsampler=None if upsampler is None else upsampler.cfg,
            text=text,
            weights=weights,
            lazy_encoder=module_bytes(vae.encoder) if lazy_encoder else 0,
            elem=next(transformer.parameters()).element_size(),
            vae_elem=next(vae.decoder.parameters()).element_size(),
            text_elem=text_elem,
        )


def output_video_bytes(num_frames: int, height: int, width: int) -> int:
    """The generated video the decode writes into: (F, H, W, 3) float32 at the requested size."""
    return num_frames * height * width * 3 * 4


def decode_bytes(
    cfg: VAEConfig,
    frames: int,
    height: int,
    width: int,
    elem: int,
    *,
    streaming: bool,
    output: int,
    chunk_frames: int = 1,
) -> int:
    """Working memory of the pipeline's decode of a latent grid into a result of ``output`` bytes (see the module
    docstring): a streamed decode (``chunk_frames`` latent frames per step) holds the result and the decoder's
    working set without its video; a one-shot one holds the decoded video, its float32 copy and the result."""
    decoded = vae_bytes(cfg, frames, height, width, elem, streaming=streaming, chunk_frames=chunk_frames)
    _, f, h, w = decoder_stages(cfg, frames, height, width)[-1]
    video = cfg.out_channels * f * h * cfg.patch_size * w * cfg.patch_size
    if streaming:
        return decoded - video * elem + output
    return decoded + (video * 4 if elem != 4 else 0) + output  # the float32 copy (in place when it is float32)


def estimate_memory(
    models: object,
    text_encoder: object | None,
    mode: str,
    *,
    num_frames: int,
    passes: Sequence[PassShape],
    batch: int = 1,
    output: tuple[int, int, int] | None = None,
) -> MemoryEstimate:
    """:func:`estimate` for loaded (or meta-device) modules: ``models`` a :class:`ltxv.weights.load.Models`,
    ``text_encoder`` a :class:`ltxv.text.t5.TextEncoder` or None."""
    sizes = ModelSizes.of(models, text_encoder)
    return estimate(sizes, mode, num_frames=num_frames, passes=passes, batch=batch, output=output)


def estimate(
    sizes: ModelSizes,
    mode: str,
    *,
    num_frames: int,
    passes: Sequence[PassShape],
    batch: int = 1,
    output: tuple[int, int, int] | None = None,
    upsample_frames: int | None = None,
    decode_chunk: int | str | None = "auto",
) -> MemoryEstimate:
    """The estimate for a run of ``passes`` (then upsampling between two passes, then a decode at the last pass's
    size) over ``num_frames`` pixel frames (padded), writing a result of ``output`` = (frames, height, width) (the
    requested size; default the last pass's). ``upsample_frames``: the pixel frames the upsampler takes at once when
    they are not ``num_frames`` (a long video's passes run a window at a time, its upsampler the whole video).
    ``decode_chunk``: the decode strategy that will run (None one shot, an int streamed with that chunk, "auto"
    :meth:`VideoVAE.decode`'s own rule)."""
    cfg = sizes.vae
    elem, vae_elem = sizes.elem, sizes.vae_elem
    weights = dict(sizes.weights)
    hybrid = [r for r in weights if r.startswith("transformer:")]
    if hybrid and offloads(mode, "transformer"):  # one transformer on the device at a time: the largest counts
        weights["transformer"] = max(weights.pop(r) for r in ["transformer", *hybrid])
    if sizes.lazy_encoder and not any(p.encode_frames for p in passes):
        weights["vae"] -= sizes.lazy_encoder  # a lazy encoder this run never reads
    sc, tc = cfg.spatial_compression, cfg.temporal_compression
    lf = (num_frames - 1) // tc + 1  # latent frames

    work: list[tuple[str, tuple[str, ...], int]] = []
    if sizes.text is not None:
        work.append(("text", ("text_encoder",), text_encoder_bytes(*sizes.text, sizes.text_elem)))
    for i, p in enumerate(passes):
        h, w = p.height // sc, p.width // sc
        tokens = lf * h * w + p.appended_tokens
        run = transformer_bytes(
            sizes.transformer, tokens, batch * p.branches, elem, per_token=p.per_token_timesteps, batch=batch
        )
        enc = [vae_bytes(cfg, (n - 1) // tc + 1, h, w, vae_elem, streaming=False) for n in p.encode_frames]
        used = ("transformer", "vae") if enc else ("transformer",)
        work.append((f"pass{i + 1}", used, max([run, *enc])))
        if i + 1 < len(passes) and sizes.upsampler is not None:
            lf_up = lf if upsample_frames is None else (upsample_frames - 1) // tc + 1
            work.append(("upsample", ("upsampler",), upsampler_bytes(sizes.upsampler, lf_up, h, w, elem)))
    last = passes[-1]
    if decode_chunk == "auto":
        decode_chunk = 1 if cfg.norm_layer != "group_norm" and lf > 2 else None  # VideoVAE.decode's "auto" rule
    streaming = decode_chunk is not None
    h, w = last.height // sc, last.width // sc
    result = output_video_bytes(*(output or (num_frames, last.height, last.width)))
    chunk = int(decode_chunk) if streaming else 1  # type: ignore[arg-type]
    decode = decode_bytes(cfg, lf, h, w, vae_elem, streaming=streaming, output=result, chunk_frames=chunk)
    work.append(("decode", ("vae",), decode))

    resident = [r for r in weights if not offloads(mode, r)]
    stages = tuple(
        StageEstimate(name, used, working, working + sum(weights[r] for r in {*resident, *used} if r in weights))
        for name, used, working in work
    )
    return MemoryEstimate(mode=mode, weights=weights, stages=stages, decode_streaming=streaming)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
