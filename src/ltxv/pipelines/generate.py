"""The generation API: ``load_pipeline(...)`` keeps the models loaded; ``Pipeline.generate(request)`` runs any mode.

T2V, I2V, keyframes, extension and V2V differ only in the media a request carries (conditioning items, a source
video); one pass or two (multi-scale) is the recipe's choice. Multi-scale follows the reference (study §4.8): pass 1 at
``int(x * downscale) // 32 * 32``, latent upsampler, AdaIN to the pass-1 latents, pass 2 at twice the pass-1 size
re-noised to its first timestep, decode, bilinear resize to the requested (padded) size. Longer videos than one clip
are a loop over temporal windows of one pass (:mod:`ltxv.pipelines.long_video`), and a pipeline may hold several
transformers that a schedule picks per step (:mod:`ltxv.pipelines.hybrid`).

LoRAs are merged into the main transformer's weights per pass (``PassSettings.loras``, else the pipeline's own set:
``load_pipeline(loras=)`` / :meth:`Pipeline.set_loras`); switching sets rewrites only the linears they touch
(:class:`ltxv.lora.LoraMerger`), so a multi-scale pass 2 with its own set (an IC-LoRA detailer) costs one switch.

Where the reference is wrong, ltxv does the right thing: video-to-video under multi-scale encodes the source at the
pass-1 size and starts pass 1 from it (the reference encodes it at full size, starts at t = 1 and asserts in pass 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ltxv.config import SchedulerConfig
from ltxv.lora.merge import LoraMerger, LoraSpec
from ltxv.model.transformer import Transformer
from ltxv.pipelines import hybrid as hybrid_module
from ltxv.pipelines import preflight
from ltxv.pipelines.denoise import CallTransformer, StepModels
from ltxv.pipelines.media import load_request_media
from ltxv.pipelines.preflight import Preflight
from ltxv.pipelines.progress import ProgressCallback, ProgressEvent
from ltxv.pipelines.request import GenerationRequest, Lora, RequestError, padded_size
from ltxv.pipelines.stages import (
    FrameConsumer,
    PassMedia,
    PassPlan,
    Streams,
    decode,
    encode_text,
    output_settings,
    run_pass,
)
from ltxv.runtime.cache import CacheReport, CacheReporting, StepCache
from ltxv.runtime.compile import CompileStats, compile_transformer
from ltxv.runtime.estimate import MemoryEstimate
from ltxv.runtime.fastpath import DecodePlan
from ltxv.runtime.residency import Residency, trimming
from ltxv.runtime.residency import release as free
from ltxv.sampling.latent_ops import adain
from ltxv.text.t5 import TextEncoder
from ltxv.weights.load import Models, load_models, load_transformer

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationResult:
    video: torch.Tensor | None  # (F, H, W, 3) float in [0, 1] (or uint8, generate's video_dtype), cropped to the
    # requested size and frame count; None when the frames went to a consumer as they were decoded (``frames=``)
    latents: torch.Tensor  # (1, C, F', H', W') normalised latents of the last pass (of the whole long video)
    step_models: tuple[tuple[str, ...], ...] = ()  # the label of the transformer that ran each step, per pass
    cache: CacheReport | None = None  # what step caching did (steps in full, reused, compute saved); None: off


class Pipeline:
    def __init__(
        self,
        models: Models,
        text_encoder: TextEncoder,
        device: torch.device | str = "cpu",
        *,
        residency: str = "resident",
        compile: bool = False,
        max_memory: int | None = None,
        group: ProcessGroup | None = None,
        label: str = "main",
    ) -> None:
        """``residency``: see :mod:`ltxv.runtime.residency` (the models are expected where its ``home`` says, as
        :func:`load_pipeline` puts them). ``compile``: ``torch.compile`` the transformer; the compile time is kept
        apart in ``compile_stats``. ``max_memory``: the device bytes a run may use (default: what the device has
        free); ``generate`` refuses a request whose estimate does not fit before it computes anything. ``group``:
        run every request on all ranks of this process group, the video tokens split over them (:mod:`ltxv.parallel`);
        every rank calls ``generate`` with the same request. ``label``: the main transformer's name in transformer
        schedules."""
        if compile and group is not None:
            raise ValueError("compile and a process group do not go together yet: the split call runs eagerly")
        self.models = models
        self.text_encoder = text_encoder
        self.group = group
        self.device = torch.device(device)
        self.residency = Residency(self.device, residency)
        self.max_memory = max_memory
        self.compile_stats: CompileStats | None = compile_transformer(models.transformer) if compile else None
        self.released = False  # set by a one-request run (generate(release=True)) that freed the weights
        # Every transformer the pipeline can run, by label; they share the VAE, T5, upsampler and latent space.
        self.transformers: dict[str, Transformer] = {label: models.transformer}
        self.main_label = label
        self.lora = LoraMerger(models.transformer)  # LoRAs edit the main transformer's weights
        self.loras: tuple[LoraSpec, ...] = ()  # the pipeline's own set, for passes that name none
        self.preflight = self._preflight()

    def set_loras(self, loras: Sequence[LoraSpec | Lora]) -> None:
        """Make ``loras`` ((path, scale) pairs or :class:`Lora` s) the pipeline's LoRA set and merge it now, without
        reloading the base weights; ``set_loras([])`` restores them bit for bit. Used by every pass whose settings
        name no LoRAs of their own. A bad file raises before any weight changes."""
        specs = checked_loras(loras, self.preflight)
        self.lora.apply(specs)
        self.loras = specs

    def pass_loras(self, request: GenerationRequest, pass_index: int) -> tuple[LoraSpec, ...]:
        """The LoRA set pass ``pass_index`` runs with: its settings' own, else the pipeline's."""
        own = request.recipe.passes[pass_index].loras
        return self.loras if own is None else tuple((x.path, x.scale) for x in own)

    def _preflight(self) -> Preflight:
        others = {k: t for k, t in self.transformers.items() if t is not self.models.transformer}
        return Preflight.for_models(
            self.models,
            self.text_encoder,
            device=self.device,
            residency=self.residency.mode,
            max_memory=self.max_memory,
            transformers={self.main_label: self.models.transformer, **others},
        )

    def add_transformer(self, label: str, transformer: Transformer) -> None:
        """Another transformer for schedules to name. It must share the main one's latent and text spaces and its
        positions (:data:`ltxv.pipelines.hybrid.SHARED`; the 2B and 13B 0.9.8 distilled do)."""
        if label in self.transformers:
            raise RequestError(f"two transformers are labelled {label!r}; name one with LABEL=PATH", param="hybrid")
        hybrid_module.check_compatible(self.models.transformer.cfg, transformer.cfg, label)
        self.transformers[label] = transformer
        self.preflight = self._preflight()

    def step_labels(self, request: GenerationRequest) -> list[list[str]]:
        """The label of the transformer that runs each step of each pass (a long video: its windows' one pass), by
        the request's transformer schedule (:func:`ltxv.pipelines.hybrid.step_labels`)."""
        steps = [len(ts) for _, _, ts in preflight.trajectory(self.models.config, request)]
        widths = {k: t.cfg.inner_dim for k, t in self.transformers.items()}
        return hybrid_module.step_labels(request.transformer_schedule, steps, widths)

    def step_models(self, request: GenerationRequest, pass_index: int, steps: int) -> StepModels:
        """(label, transformer) for every step of pass ``pass_index``, by :meth:`step_labels`."""
        labels = self.step_labels(request)[pass_index]
        if len(labels) != steps:
            raise ValueError(f"pass {pass_index} runs {steps} steps, its schedule has {len(labels)}")
        return [(label, self.transformers[label]) for label in labels]

    def transformer_call(self, request: GenerationRequest, pass_index: int) -> CallTransformer | None:
        """How the denoiser of a pass evaluates the transformer (None: a plain call). Made anew for every pass, so
        a wrapper with state (step caching, :class:`ltxv.runtime.cache.StepCache`) starts clean in each. A split run
        (a process group) calls through :class:`ltxv.parallel.sequence.SequenceParallel`, with the step cache inside
        it: the cache runs on this rank's tokens (the blocks it runs are split too) and its indicator is summed over
        the ranks, so every rank reuses the same steps."""
        config = request.cache_config(pass_index)
        cache = None
        if config is not None:
            h, w = self.pass_sizes(request)[pass_index]
            from_source = pass_index == 0 and request.input_media is not None
            steps = len(self.pass_timesteps(request, pass_index, h, w, from_source))
            cache = StepCache(config, steps, pass_index=pass_index)
        if self.group is None:
            return cache
        from ltxv.parallel.sequence import SequenceParallel

        split = SequenceParallel(self.group, inner=cache)
        if cache is not None:
            cache.reduce = split.reduce_sum
        return split

    def scheduler_config(self, sampler: str) -> SchedulerConfig:
        return preflight.scheduler_config(self.models.config, sampler)

    def pass_sizes(self, request: GenerationRequest) -> list[tuple[int, int]]:
        """(height, width) of each denoising pass: the padded size, or the multi-scale recipe's two sizes."""
        return preflight.pass_sizes(self.models.config, request)

    def pass_timesteps(self, request: GenerationRequest, i: int, h: int, w: int, from_source: bool) -> torch.Tensor:
        """The timesteps pass ``i`` runs at (h, w); ``from_source``: it starts from an encoded source video."""
        return preflight.pass_timesteps(self.models.config, request, i, h, w, from_source)

    def decode_plan(self, request: GenerationRequest) -> DecodePlan:
        """How the request's VAE decode runs, one shot or streamed and in what chunks: from each strategy's working
        memory (the estimate's closed forms), the memory the decode may take now (what the device has free, and
        ``max_memory``) and what is fast on this device (:func:`ltxv.runtime.fastpath.plan_decode`)."""
        h, w = self.pass_sizes(request)[-1]
        frames = padded_size(request.height, request.width, request.num_frames)[2]
        return self.preflight.decode_plan(request, h, w, frames)

    def memory_estimate(self, request: GenerationRequest, media: PassMedia | None = None) -> MemoryEstimate:
        """The device-memory estimate of ``request`` under this pipeline's residency mode (closed forms, instant;
        the media are probed, not loaded; ``media`` is accepted for compatibility and not needed)."""
        return self.preflight.plan(request, mode=self.residency.mode).memory

    @torch.inference_mode()
    def generate(
        self,
        request: GenerationRequest,
        *,
        callback: ProgressCallback | None = None,
        frames: FrameConsumer | None = None,
        release: bool = False,
        video_dtype: torch.dtype = torch.float32,
    ) -> GenerationResult:
        """Run ``request``; ``callback`` receives a :class:`ProgressEvent` per unit of work (raise from it to stop).
        Everything that can be checked before computing is (:meth:`Preflight.check`: the request, its media, the
        recipe against the model, the transformer schedule, the memory), so a bad request fails at once, with one
        line. A request longer than one clip runs as a long video (:mod:`ltxv.pipelines.long_video`).

        ``frames``: receives the output video block by block as it is decoded, ``(n, h, w, 3)`` float32 in [0, 1] in
        frame order (e.g. :meth:`ltxv.io.video.Mp4Writer.write`); the result's video is then None, so no video-sized
        tensor ever exists. ``release``: this pipeline runs this one request (``ltxv generate``): each model's
        weights are freed after its last stage (T5 once the prompts are encoded, the upsampler once it has run, the
        transformers before the decode), so the process never holds them all at once; the pipeline cannot run
        again. ``video_dtype``: the returned video's, float32 in [0, 1] or uint8 (what an mp4 stores: a quarter of
        the memory)."""
        if self.released:
            raise RuntimeError("this pipeline freed its weights after a one-request run (release=True); load another")
        checked = self.preflight.check(request, streamed=frames is not None)
        log.info("%s", checked.memory.summary())
        if checked.windows is not None:
            from ltxv.pipelines.long_video import generate_long

            return generate_long(self, checked, callback=callback, frames=frames, video_dtype=video_dtype)
        strategy = checked.decode  # the preflight's choice, which its memory estimate assumed
        assert strategy is not None
        log.info("%s", strategy.describe())
        recipe = request.recipe
        m = self.models
        height, width, num_frames = checked.size
        sizes = [(p.height, p.width) for p in checked.passes]
        media = load_request_media(request, height, width, num_frames, checked.media)
        loras = [self.pass_loras(request, i) for i in range(len(sizes))]
        for i, chosen in enumerate(loras):
            self.lora.check(chosen)  # read (and cached) before any work: the switches below only merge
            if not chosen and any(i in c.passes for c in media.control):
                log.warning(
                    "pass %d has a control video but no LoRA: it runs, but nothing was trained to read it "
                    "(load an IC-LoRA)",
                    i + 1,
                )
        streams = Streams.from_seed(request.seed, self.device)
        use = self.residency.use
        with use(text_encoder=self.text_encoder):
            text = encode_text(self.text_encoder, request.prompt, request.negative_prompt)
        if release:
            self.released = True
            free(self.text_encoder)
        if callback is not None:
            callback(ProgressEvent("text", 1, 1))

        used: list[tuple[str, ...]] = []
        caches: list[CacheReporting] = []

        def one_pass(i: int, pm: PassMedia, init: torch.Tensor | None) -> torch.Tensor:
            h, w = sizes[i]
            ts = torch.tensor(checked.passes[i].timesteps, dtype=torch.float32)
            plan = PassPlan(
                h,
                w,
                num_frames,
                request.frame_rate,
                recipe.passes[i],
                ts,
                recipe.stg_mode,
                request.image_cond_noise_scale,
                pass_index=i,
                num_passes=len(sizes),
            )
            models = self.step_models(request, i, len(ts))
            used.append(tuple(label for label, _ in models))
            call = self.transformer_call(request, i)
            if callable(getattr(call, "report", None)):  # a StepCache, or a wrapper that passes its report on
                caches.append(call)  # type: ignore[arg-type]
            self.lora.apply(loras[i])  # where the weights live between stages, so residency's host copies follow
            encodes = pm.source is not None or pm.conditioning or any(c.media is not None for c in pm.control)
            with self.residency.use_pass(dict(models), vae=m.vae if encodes else None) as activate:
                return run_pass(
                    models, m.vae, text, plan, pm, init, streams, call=call, progress=callback, activate=activate
                )

        if len(sizes) == 1:
            latents = one_pass(0, media, None)
        else:
            low = one_pass(0, media, None)
            with use(upsampler=m.upsampler):
                up = adain(m.upsampler(low), low)  # type: ignore[misc]
            if release:
                free(m.upsampler)
            if callback is not None:
                callback(ProgressEvent("upsample", 1, 1))
            latents = one_pass(1, PassMedia(conditioning=media.conditioning, control=media.control), up)
            del low, up
        if release:
            self.lora = LoraMerger(m.transformer)  # drops the old merger's host copies of base weights and its files
            free(*self.transformers.values())
        with use(vae=m.vae):
            out = output_settings(request, height, width)
            video = decode(
                m.vae,
                latents,
                **out,
                streams=streams,
                progress=trimming(callback) if release and self.device.type == "cpu" else callback,
                frames=frames,
                chunk_frames=strategy.chunk_frames,
                out_dtype=video_dtype,
            )
        report = CacheReport(tuple(c.report() for c in caches)) if caches else None
        if report is not None:
            log.info("%s", report.summary())
        return GenerationResult(video=video, latents=latents, step_models=tuple(used), cache=report)


def checked_loras(loras: Sequence[LoraSpec | Lora], against: Preflight) -> tuple[LoraSpec, ...]:
    """``loras`` ((path, scale) pairs or :class:`Lora` s) as pairs, each checked (scale, file, against the
    transformer ``against`` describes) from the files' headers; a :class:`RequestError` names the first bad one."""
    specs = tuple((x.path, x.scale) if isinstance(x, Lora) else (x[0], x[1]) for x in loras)
    for i, (path, scale) in enumerate(specs):
        Lora(path, scale).validate(f"loras[{i}]")
        against.check_lora(path, f"loras[{i}]")
    return specs


def load_pipeline(
    checkpoint: str | Path,
    *,
    upsampler: str | Path | None = None,
    text_encoder: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    residency: str = "resident",
    quantize: str | None = None,
    compile: bool = False,
    max_memory: int | None = None,
    loras: Sequence[LoraSpec | Lora] = (),
    hybrid: str | Path | Sequence[str | Path] = (),
    group: ProcessGroup | None = None,
) -> Pipeline:
    """Load the models once; call ``generate`` as often as needed. Names of released files resolve via the hub.

    The defaults are the CLI's: ``dtype`` None is bfloat16 where the device computes it fast, else float32
    (``presets.default_dtype``); ``device`` None is CUDA if present, else the CPU. The files are checked from their
    headers first (:meth:`Preflight.from_files`), so a wrong file fails before any weight is read.
    ``residency``: "resident", "offload-text" (T5 on the CPU except while it encodes) or "sequential" (every model on
    the CPU except during its stage), :mod:`ltxv.runtime.residency`. ``quantize="fp8"``: the transformer blocks'
    linears quantised to float8_e4m3fn as they are read (fp8 files load as stored anyway). ``compile``:
    ``torch.compile`` the transformer (opt-in; its compile time is reported apart, ``Pipeline.compile_stats``).
    ``max_memory``: see :class:`Pipeline`. The VAE encoder is read from the checkpoint on the first request that
    encodes media (``lazy_vae_encoder``). ``loras``: (path, scale) pairs (or :class:`Lora` s) merged into the
    (main) transformer once it is loaded, checked against it before any weight is read: the pipeline's LoRA set,
    :meth:`Pipeline.set_loras`. ``hybrid``: further checkpoints whose transformers (only) join the pipeline, each
    ``PATH`` or ``LABEL=PATH``, for transformer schedules (:mod:`ltxv.pipelines.hybrid`; labels default to the file
    name's size token, ``2b``, ``13b``, else ``main`` for ``checkpoint`` and ``hybrid`` for the others; LoRAs edit
    the main one only). ``group``: a ``torch.distributed`` process group to split every request's tokens over (see
    :class:`Pipeline`)."""
    checked = Preflight.from_files(
        checkpoint,
        upsampler,
        text_encoder,
        dtype=dtype,
        device=device,
        residency=residency,
        quantize=quantize,
        hybrid=[hybrid] if isinstance(hybrid, str | Path) else list(hybrid),
    )
    checked.max_memory = max_memory
    return load_checked(checked, compile=compile, loras=loras, group=group)


def load_checked(
    checked: Preflight,
    *,
    compile: bool = False,
    loras: Sequence[LoraSpec | Lora] = (),
    group: ProcessGroup | None = None,
) -> Pipeline:
    """Load the files a :meth:`Preflight.from_files` checked, as it was told to (dtype, device, residency, quantize,
    max_memory), and merge ``loras``: the CLI checks its request against the preflight first, then loads."""
    specs = checked_loras(loras, checked)  # from the headers, before the checkpoint's gigabytes are read
    files, device, residency = checked.files, checked.device, checked.residency
    policy = Residency(device, residency)
    home = policy.home("transformer")
    models = load_models(
        files["checkpoint"],  # type: ignore[arg-type]
        upsampler=files["upsampler"],
        dtype=checked.dtype,  # type: ignore[arg-type]
        device=home,
        quantize=checked.quantize,
        lazy_vae_encoder=True,
    )
    encoder = TextEncoder.from_pretrained(
        files["text_encoder"], dtype=checked.dtype, device=policy.home("text_encoder")
    )  # type: ignore[arg-type]
    labels = checked.labels
    pipe = Pipeline(
        models,
        encoder,
        device,
        residency=residency,
        compile=compile,
        max_memory=checked.max_memory,
        group=group,
        label=labels[0],
    )
    for label, path in zip(labels[1:], checked.hybrid_files):
        transformer, _ = load_transformer(path, dtype=checked.dtype, device=home, quantize=checked.quantize)  # type: ignore[arg-type]
        if compile:
            compile_transformer(transformer)
        pipe.add_transformer(label, transformer)
    if specs:
        pipe.set_loras(specs)
    return pipe
