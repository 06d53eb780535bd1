"""The checks every front door runs before any weights are read: the CLI, the Python API (``Pipeline.generate``) and
the job service all ask the same :class:`Preflight`, so a request refused by one is refused by all, with one message.

A preflight is built once from the model files' headers (:meth:`Preflight.from_files`: no tensor data is read) or
from loaded models (:meth:`Preflight.for_models`). :meth:`Preflight.check` then takes a request and, in a few
milliseconds plus the media probes:

* validates every field of the request (``GenerationRequest.validate``);
* probes its media (files opened and their headers and first frames decoded, content sniffed; tensors checked for
  dtype, shape, range and finiteness) and makes the checks the media loading relies on (``pipelines.media``);
* works out each pass's size and timesteps as the pipeline will, so a multi-scale recipe too small for the size, a
  ``denoise_strength`` below every step, a timestep the checkpoint does not allow, STG blocks past the transformer's
  layers (only where STG is active at that step: the released 2B distilled recipe lists an inert block 42), a
  multi-scale recipe without an upsampler or a first pass too small for the upsampler are refused;
* reads the headers of every LoRA a pass names and checks them against the transformer (``ltxv.lora``: keys, shapes,
  layouts), so a bad LoRA is the request's error, named by its field;
* checks the output destination (``ltxv.io.output``) when one is given;
* compares the memory estimate (``ltxv.runtime.estimate``) with what the device has (or ``max_memory``), naming the
  residency mode that would fit when another would.

Every failure is an :class:`~ltxv.errors.LtxvError` (``RequestError``, ``LoadError``, ``OutputError``,
``DeviceError``) whose message is one line and whose ``param`` names the request field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ltxv.conditioning.window import temporal_windows
from ltxv.config import CheckpointConfig, SchedulerConfig
from ltxv.io.output import check_output
from ltxv.pipelines import hybrid as hybrid_module
from ltxv.pipelines import stages
from ltxv.pipelines.denoise import per_step_guidance
from ltxv.pipelines.media import MediaPlan, control_items, media_items, plan_media
from ltxv.pipelines.request import GenerationRequest, RequestError, as_request, padded_size
from ltxv.runtime.devices import available_memory, check_device
from ltxv.runtime.estimate import MemoryEstimate, ModelSizes, PassShape, decode_bytes, estimate, output_video_bytes
from ltxv.runtime.fastpath import CHUNKS, DecodePlan, plan_decode, room
from ltxv.runtime.residency import MODES, offloads
from ltxv.sampling.guidance import active_branches

GROUP_NORM_GROUPS = 32  # the latent upsampler's GroupNorm


@dataclass(frozen=True)
class Limits:
    """Caps a server puts on requests (None: no cap)."""

    max_pixels: int | None = None  # height x width
    max_frames: int | None = None


@dataclass(frozen=True)
class PassSchedule:
    height: int
    width: int
    timesteps: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """What a checked request will run: the padded size, each pass's size and timesteps, the media, the memory."""

    request: GenerationRequest
    size: tuple[int, int, int]  # padded (height, width, frames)
    passes: tuple[PassSchedule, ...]
    media: MediaPlan
    memory: MemoryEstimate
    output: Path | None = None
    windows: tuple[tuple[int, int], ...] | None = None  # a long video's windows ([start, end) latent frames)
    step_labels: tuple[tuple[str, ...], ...] = ()  # the transformer that runs each step of each pass
    decode: DecodePlan | None = None  # how the decode runs; None: a long video's own streamed decode


def scheduler_config(config: CheckpointConfig, sampler: str) -> SchedulerConfig:
    if sampler in ("from_checkpoint", "", None):
        return config.scheduler
    return SchedulerConfig(sampler="Uniform" if sampler.lower() == "uniform" else "LinearQuadratic")


def pass_sizes(config: CheckpointConfig, request: GenerationRequest) -> list[tuple[int, int]]:
    """(height, width) of each denoising pass: the padded size, or the multi-scale recipe's two sizes (pass 1 at
    ``int(x * downscale) // 32 * 32``, pass 2 at twice that)."""
    height, width, _ = padded_size(request.height, request.width, request.num_frames)
    recipe = request.recipe
    if recipe.pipeline_type == "base":
        return [(height, width)]
    s = config.vae.spatial_compression
    h1 = int(height * recipe.downscale_factor) // s * s
    w1 = int(width * recipe.downscale_factor) // s * s
    if min(h1, w1) < s:
        raise RequestError(
            f"{height}x{width} is too small for multi-scale: the first pass would be {h1}x{w1} (at least "
            f"{s}x{s}); ask for at least {-(-s // recipe.downscale_factor):.0f} pixels a side or use a one-pass recipe",
            param="height" if h1 < s else "width",
        )
    return [(h1, w1), (2 * h1, 2 * w1)]


def pass_timesteps(
    config: CheckpointConfig,
    request: GenerationRequest,
    i: int,
    h: int,
    w: int,
    from_source: bool,
    frames: int | None = None,
) -> torch.Tensor:
    """The timesteps pass ``i`` runs at (h, w) over ``frames`` pixel frames (default: the request's, padded);
    ``from_source``: it starts from an encoded source video."""
    recipe = request.recipe
    where = f"recipe.{('first', 'second')[i]}_pass"
    frames = frames or padded_size(request.height, request.width, request.num_frames)[2]
    s, tc = config.vae.spatial_compression, config.vae.temporal_compression
    n_tokens = ((frames - 1) // tc + 1) * (h // s) * (w // s)
    allowed = config.allowed_inference_steps
    try:
        ts = stages.pass_timesteps(scheduler_config(config, recipe.sampler), recipe.passes[i], n_tokens, allowed)
    except ValueError as e:  # a schedule with no steps left, or a step the checkpoint was not trained on
        param = f"{where}.timesteps" if "not allowed" in str(e) else where
        raise RequestError(f"{where}: {e}", param=param) from None
    if request.denoise_strength is not None and from_source:
        ts = ts[ts <= request.denoise_strength + 1e-6]
        if ts.numel() == 0:
            raise RequestError(
                f"denoise_strength {request.denoise_strength} is below every step of the schedule",
                param="denoise_strength",
            )
    return ts


def windows(config: CheckpointConfig, request: GenerationRequest) -> list[tuple[int, int]] | None:
    """The [start, end) latent frames of each window of a long video (``request.window_frames``); None for a clip."""
    tile = request.window_frames()
    if tile is None:
        return None
    tc = config.vae.temporal_compression
    frames = padded_size(request.height, request.width, request.num_frames)[2]
    return temporal_windows((frames - 1) // tc + 1, tile // tc, request.temporal_overlap_frames // tc)


def trajectory(config: CheckpointConfig, request: GenerationRequest) -> list[tuple[int, int, torch.Tensor]]:
    """(height, width, timesteps) of every pass the request runs. A long video's windows run the same passes, each
    pass's timesteps made for a window's token count."""
    window = request.window_frames()
    frames = None if window is None else window + 1
    return [
        (h, w, pass_timesteps(config, request, i, h, w, i == 0 and request.input_media is not None, frames))
        for i, (h, w) in enumerate(pass_sizes(config, request))
    ]


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class Preflight:
    """The checks of one loaded (or to-be-loaded) model set on one device; build once, :meth:`check` every request.

    ``sizes``: the models' configs and weight sizes (:class:`~ltxv.runtime.estimate.ModelSizes`); ``config``: the
    checkpoint's; ``held``: bytes of weights already on the device (a loaded pipeline), so only the rest must fit.
    ``max_memory``: the bytes a run may use on the device instead of what it has free. ``limits``: a server's caps.
    On a CPU every model lives in host memory whatever the residency mode, so the estimate there is the resident one.
    """

    def __init__(
        self,
        config: CheckpointConfig,
        sizes: ModelSizes,
        *,
        device: str | torch.device = "cpu",
        residency: str = "resident",
        max_memory: int | None = None,
        held: int = 0,
        limits: Limits | None = None,
    ) -> None:
        if residency not in MODES:
            raise RequestError(f"residency must be one of {list(MODES)}, got {residency!r}", param="residency")
        if max_memory is not None and (not isinstance(max_memory, int) or max_memory <= 0):
            raise RequestError(f"max_memory must be a positive number of bytes, got {max_memory!r}", param="max_memory")
        self.config, self.sizes = config, sizes
        self.device = check_device(device)
        self.residency = residency
        self.max_memory, self.held, self.limits = max_memory, held, limits or Limits()
        self._linears: dict[str, tuple[int, int]] | None = None  # the transformer's linears, for LoRA checks
        self.files: dict[str, Path | None] = {}  # the resolved model files (from_files)
        self.dtype: torch.dtype | None = None  # the compute dtype the files are checked for (from_files)
        self.quantize: str | None = None  # and the quantisation
        # The transformers a schedule can name: label -> inner width, the main one first (a hybrid pipeline's
        # further ones after it), and the files of those further ones (from_files).
        self.widths: dict[str, int] = {"main": config.transformer.inner_dim}
        self.hybrid_files: list[Path] = []

    @property
    def labels(self) -> list[str]:
        return list(self.widths)

    @classmethod
    def from_files(
        cls,
        checkpoint: str | Path,
        upsampler: str | Path | None = None,
        text_encoder: str | Path | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        residency: str = "resident",
        quantize: str | None = None,
        max_memory: int | None = None,
        limits: Limits | None = None,
        hybrid: Sequence[str | Path] = (),
    ) -> Preflight:
        """From the model files (paths, or released names resolved as ``load_pipeline`` resolves them: the Hugging
        Face cache, else a download), reading headers and configs only: every network built on the meta device and
        checked against its file key by key and shape by shape, the text encoder's folder checked (safetensors,
        names, shapes, tokenizer) and matched with the transformer's caption width. ``dtype`` None: the default
        (``presets.default_dtype``); ``device`` None: CUDA if present, else the CPU. ``self.files`` holds the
        resolved paths to load from. ``hybrid``: further checkpoints (``PATH`` or ``LABEL=PATH``) whose transformers
        a hybrid pipeline holds, checked the same way and against the main one (:func:`hybrid_module.check_compatible`);
        ``self.labels`` and ``self.hybrid_files`` hold their labels and paths."""
        from ltxv.pipelines.presets import default_dtype
        from ltxv.text.t5 import check_text_encoder, meta_text_encoder
        from ltxv.weights.errors import LoadError
        from ltxv.weights.hub import DEFAULT_TEXT_ENCODER, resolve
        from ltxv.weights.load import plan_models

        dev = check_device(device)
        if dtype is None:
            dtype = default_dtype(dev)
        ckpt = resolve(checkpoint, "checkpoint")
        up = resolve(upsampler, "upsampler") if upsampler is not None else None
        text = resolve(text_encoder or DEFAULT_TEXT_ENCODER, "text_encoder")
        models = plan_models(ckpt, up, dtype=dtype, quantize=quantize)
        t5_config = check_text_encoder(text)
        if t5_config.d_model != models.config.transformer.caption_channels:
            raise LoadError(
                f"{text}: the text encoder is {t5_config.d_model} wide, but {Path(ckpt).name}'s transformer takes "
                f"{models.config.transformer.caption_channels}-wide prompt embeddings: not the text encoder of this "
                "checkpoint",
                param="text_encoder",
            )
        transformers, paths = _hybrid_transformers(models, ckpt, hybrid, dtype, quantize)
        sizes = ModelSizes.of(models, meta_text_encoder(t5_config, dtype), lazy_encoder=True, transformers=transformers)
        pre = cls(models.config, sizes, device=dev, residency=residency, max_memory=max_memory, limits=limits)
        pre.files = {"checkpoint": ckpt, "upsampler": up, "text_encoder": text}
        pre.dtype, pre.quantize = dtype, quantize
        pre.widths = {k: t.cfg.inner_dim for k, t in transformers.items()}
        pre.hybrid_files = paths
        return pre

    @classmethod
    def for_models(
        cls,
        models: Any,
        text_encoder: Any,
        *,
        device: str | torch.device,
        residency: str = "resident",
        max_memory: int | None = None,
        limits: Limits | None = None,
        transformers: Mapping[str, Any] | None = None,
    ) -> Preflight:
        """For loaded models (``ltxv.weights.load.Models`` and a ``TextEncoder``), whose weights already sit where
        the residency mode keeps them: only the rest of a run must fit. ``transformers``: every transformer a
        schedule can name, by label, the main one first (default: the main one, ``main``)."""
        transformers = dict(transformers or {"main": models.transformer})
        sizes = ModelSizes.of(models, text_encoder, transformers=transformers)
        dev = check_device(device)
        # On a CPU every weight is in memory already; elsewhere those the mode keeps on the device (a lazy encoder
        # not yet read is in neither).
        held = sum(b for r, b in sizes.weights.items() if dev.type == "cpu" or not offloads(residency, r))
        held -= sizes.lazy_encoder if dev.type == "cpu" or not offloads(residency, "vae") else 0
        pre = cls(
            models.config, sizes, device=dev, residency=residency, max_memory=max_memory, held=held, limits=limits
        )
        pre.widths = {k: t.cfg.inner_dim for k, t in transformers.items()}
        return pre

    # --- the checks -------------------------------------------------------------------------------------------------

    def plan(self, request: Any, *, mode: str | None = None, streamed: bool = False) -> Plan:
        """Every check that needs no device or output: the request, its media, its passes, its transformer schedule;
        with the memory estimate under ``mode`` (default: this preflight's residency, or "resident" on a CPU, where
        every model lives in memory whatever the mode). ``streamed``: the output goes to a frame consumer as it is
        decoded, so the estimate holds no output video. A long video is estimated for one window."""
        request = as_request(request)
        cfg, recipe = self.config, request.recipe
        self._check_limits(request)
        wins = windows(cfg, request)
        if recipe.pipeline_type == "multi-scale" and self.sizes.upsampler is None:
            raise RequestError(
                "the recipe is multi-scale: it needs a latent upsampler (--upsampler FILE / upsampler=...), or use a "
                "one-pass recipe",
                param="upsampler",
            )
        height, width, frames = padded_size(request.height, request.width, request.num_frames)
        media = plan_media(request, height, width, frames)
        passes = [PassSchedule(h, w, tuple(ts.tolist())) for h, w, ts in trajectory(cfg, request)]
        self._check_stg(request, passes)
        self.check_loras(request)
        if len(passes) == 2:
            self._check_upsampler_input(request, passes[0], frames)
        labels = hybrid_module.step_labels(
            request.transformer_schedule, [len(p.timesteps) for p in passes], self.widths
        )
        estimated = frames
        if wins is not None:
            if any(n != 1 for n, _ in media.conditioning):
                raise RequestError(
                    "a long video is conditioned on an image at frame 0, not on a video", param="conditioning[0].media"
                )
            # A window, its appended tail and guide included, is what the transformer and the decoder hold at once.
            tc = cfg.vae.temporal_compression
            estimated = tc * (wins[0][1] - wins[0][0] + request.temporal_overlap_frames // tc) + 1
        decode = None if wins is not None else self.decode_plan(request, passes[-1].height, passes[-1].width, frames)
        chunk = "auto" if decode is None else decode.chunk_frames
        memory = self._estimate(request, passes, media, estimated, mode or self._mode(), streamed, frames, chunk)
        step = tuple(tuple(x) for x in labels)
        win = wins and tuple(wins)
        return Plan(request, (height, width, frames), tuple(passes), media, memory, None, win, step, decode)

    def check(
        self, request: Any, output: str | Path | None = None, *, overwrite: bool = False, streamed: bool = False
    ) -> Plan:
        """:meth:`plan`, the output destination (when given) and the memory against the device; returns the plan."""
        plan = self.plan(request, streamed=streamed)
        r = plan.request
        if output is not None:
            last, vae = plan.passes[-1], self.config.vae
            s = vae.spatial_compression
            latents = vae.latent_channels * ((plan.size[2] - 1) // vae.temporal_compression + 1)
            latents *= (last.height // s) * (last.width // s) * 4  # float32, as write_tensors stores them
            out = check_output(
                output,
                num_frames=r.num_frames,
                height=r.height,
                width=r.width,
                fps=r.frame_rate,
                latents=latents,
                overwrite=overwrite,
            )
            plan = replace(plan, output=out)
        self._check_memory(plan)
        return plan

    def _mode(self) -> str:
        return "resident" if self.device.type == "cpu" else self.residency

    def _check_limits(self, request: GenerationRequest) -> None:
        lim = self.limits
        if lim.max_pixels is not None and request.height * request.width > lim.max_pixels:
            raise RequestError(
                f"{request.width}x{request.height} is {request.height * request.width} pixels, over the limit of "
                f"{lim.max_pixels}",
                param="height",
                code="too_large",
            )
        if lim.max_frames is not None and request.num_frames > lim.max_frames:
            raise RequestError(
                f"num_frames {request.num_frames} is over the limit of {lim.max_frames}",
                param="num_frames",
                code="too_large",
            )

    def _check_stg(self, request: GenerationRequest, passes: list[PassSchedule]) -> None:
        layers = self.config.transformer.num_layers
        for i, (p, settings) in enumerate(zip(passes, request.recipe.passes)):
            for step, (t, g) in enumerate(zip(p.timesteps, per_step_guidance(settings, list(p.timesteps)))):
                bad = [b for b in g.blocks if b >= layers]
                if bad and "perturbed" in active_branches(g.cfg, g.stg):
                    where = f"recipe.{('first', 'second')[i]}_pass.skip_block_list"
                    raise RequestError(
                        f"{where}: STG perturbs block(s) {bad} at step {step} (t={t:.4f}), but the checkpoint's "
                        f"transformer has {layers} blocks (0..{layers - 1}): this recipe is for another model",
                        param=where,
                        code="model",
                    )

    def check_loras(self, request: GenerationRequest) -> None:
        """Every LoRA a pass of the request names, checked from its header against the transformer (the pipeline's own
        set, ``loras=None``, was checked when it was set)."""
        for i, settings in enumerate(request.recipe.passes):
            for j, lora in enumerate(settings.loras or ()):
                self.check_lora(lora.path, f"recipe.{('first', 'second')[i]}_pass.loras[{j}]")

    def check_lora(self, path: str | Path, param: str | None = None) -> None:
        """A LoRA file's keys, shapes and layout against the transformer, from its header (no factors read); a
        :class:`RequestError` naming the file, the key and ``param``."""
        from ltxv.lora import LoraError, linear_shapes, read_lora
        from ltxv.model.transformer import Transformer

        if self._linears is None:
            with torch.device("meta"):
                self._linears = linear_shapes(Transformer(self.config.transformer))
        try:
            read_lora(path, self._linears, load=False)
        except LoraError as e:
            raise RequestError(str(e), param=param, code="model") from None

    def _check_upsampler_input(self, request: GenerationRequest, first: PassSchedule, frames: int) -> None:
        """GroupNorm needs more than one value per group: the first pass's latent grid, times the upsampler's channels
        per group, must hold at least two (a 1 x 1 x 1 grid does not, with 32 channels in 32 groups)."""
        up = self.sizes.upsampler
        s, tc = self.config.vae.spatial_compression, self.config.vae.temporal_compression
        grid = ((frames - 1) // tc + 1) * (first.height // s) * (first.width // s)
        if up is not None and grid * (up.mid_channels // GROUP_NORM_GROUPS) < 2:
            raise RequestError(
                f"{request.width}x{request.height} with {request.num_frames} frame(s): the multi-scale first pass is a "
                f"{(frames - 1) // tc + 1}x{first.height // s}x{first.width // s} latent grid, too small for the "
                "latent upsampler; ask for more frames or a larger size, or use a one-pass recipe",
                param="num_frames",
            )

    def _estimate(
        self,
        request: GenerationRequest,
        passes: list[PassSchedule],
        media: MediaPlan,
        frames: int,
        mode: str,
        streamed: bool = False,
        upsample_frames: int | None = None,
        decode_chunk: int | str | None = "auto",
    ) -> MemoryEstimate:
        s = self.config.vae.spatial_compression
        shapes = []
        items = [c for _, c in media_items(request)]
        controls = [c for _, c in control_items(request)]
        for i, p in enumerate(passes):
            guidance = per_step_guidance(request.recipe.passes[i], list(p.timesteps))
            # Appended tokens: one latent frame per later keyframe, the two prefix latent frames per later video, the
            # whole video per IC-LoRA control of the pass.
            appended = sum((1 if n == 1 else 2) for (_, n), c in zip(media.conditioning, items) if c.frame > 0)
            pass_controls = [c for c in controls if i in c.passes]
            appended += len(pass_controls) * ((frames - 1) // self.config.vae.temporal_compression + 1)
            from_source = i == 0 and media.source is not None
            shapes.append(
                PassShape(
                    height=p.height,
                    width=p.width,
                    branches=max(len(active_branches(g.cfg, g.stg)) for g in guidance),
                    per_token_timesteps=bool(media.conditioning or pass_controls)
                    or request.window_frames() is not None,
                    appended_tokens=appended * (p.height // s) * (p.width // s),
                    encode_frames=tuple(n for _, n in media.conditioning)
                    + ((frames,) if from_source else ())
                    + tuple(frames for c in pass_controls if c.media is not None),
                )
            )
        output = (0 if streamed else request.num_frames, request.height, request.width)
        return estimate(
            self.sizes,
            mode,
            num_frames=frames,
            passes=shapes,
            output=output,
            upsample_frames=upsample_frames,
            decode_chunk=decode_chunk,
        )

    def _room(self) -> int | None:
        try:
            return room(self.device, self.max_memory)
        except (AssertionError, RuntimeError):  # a device this torch cannot query (checked elsewhere)
            return self.max_memory

    def decode_plan(self, request: GenerationRequest, height: int, width: int, frames: int) -> DecodePlan:
        """How the request's VAE decode will run, one shot or streamed and in what chunks (``height`` x ``width``:
        the last pass's size; ``frames``: the padded pixel frames): from each strategy's working memory (the
        estimate's closed forms), the memory the decode may take now (what the device has free, ``max_memory``)
        and what is fast on this device (:func:`ltxv.runtime.fastpath.plan_decode`)."""
        cfg = self.config.vae
        s, lf = cfg.spatial_compression, (frames - 1) // cfg.temporal_compression + 1
        elem = self.sizes.vae_elem
        result = output_video_bytes(request.num_frames, request.height, request.width)

        def cost(chunk: int | None) -> int:
            h, w = height // s, width // s
            return decode_bytes(
                cfg, lf, h, w, elem, streaming=chunk is not None, output=result, chunk_frames=chunk or 1
            )

        costs: dict[int | None, int] = {None: cost(None)}
        if lf > 2:  # shorter clips decode in one shot (VideoVAE.decode's rule)
            costs |= {c: cost(c) for c in CHUNKS if c < lf}
        return plan_decode(
            costs,
            device=self.device,
            dtype=torch.bfloat16 if elem == 2 else torch.float32,
            room=self._room(),
            streamable=cfg.norm_layer != "group_norm",
        )

    def _check_memory(self, plan: Plan) -> None:
        limit = self.max_memory
        source = "the limit (max_memory)"
        if limit is None:
            limit = available_memory(self.device)
            source = "what is free on " + ("this machine" if self.device.type == "cpu" else str(self.device))
        if limit is None:
            return
        need = plan.memory.peak - self.held
        if need <= limit:
            return
        where = f"{plan.memory.peak_stage}, {plan.memory.mode}"
        fits = []
        if self.device.type != "cpu":
            for mode in MODES:
                if mode != self.residency:
                    chunk = "auto" if plan.decode is None else plan.decode.chunk_frames
                    other = self._estimate(
                        plan.request, list(plan.passes), plan.media, plan.size[2], mode, decode_chunk=chunk
                    )
                    if other.peak - self.held <= limit:
                        fits.append(f"residency {mode!r} would fit ({_size(other.peak)})")
        advice = fits[0] if fits else "ask for fewer frames or a smaller size"
        raise RequestError(
            f"the run needs about {_size(need)} of memory (peak in {where}) but {source} is {_size(limit)}; {advice}",
            param="num_frames",
            code="memory",
        )


def _hybrid_transformers(
    models: Any, checkpoint: Path, specs: Sequence[str | Path], dtype: torch.dtype, quantize: str | None
) -> tuple[dict[str, Any], list[Path]]:
    """The transformers a hybrid pipeline of ``models`` and ``specs`` holds, by label, planned from their headers
    (meta device), each checked against the main one; and the further ones' resolved paths."""
    from ltxv.weights.hub import resolve
    from ltxv.weights.load import plan_transformer

    main = hybrid_module.label_for(checkpoint, "main") if specs else "main"
    out, paths = {main: models.transformer}, []
    for k, spec in enumerate(specs):
        label, path = hybrid_module.split_label(str(spec))
        path = resolve(path, "checkpoint")
        label = label or hybrid_module.label_for(path, "hybrid" if len(specs) == 1 else f"hybrid{k + 1}")
        if label in out:
            raise RequestError(f"two transformers are labelled {label!r}; name one with LABEL=PATH", param="hybrid")
        transformer, _ = plan_transformer(path, dtype=dtype, quantize=quantize)
        hybrid_module.check_compatible(models.transformer.cfg, transformer.cfg, label)
        out[label] = transformer
        paths.append(Path(path))
    return out, paths
