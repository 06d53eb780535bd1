"""``ltxv generate``: the reference ``inference.py`` flags and defaults, one video per run."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltxv.cli.flags import REQUEST_FLAGS, add, add_model_flags
from ltxv.cli.models import ModelChoice, recipe_of
from ltxv.io.output import check_output
from ltxv.pipelines.loras import parse_lora_arg, with_lora_flags
from ltxv.pipelines.presets import NATIVE_SIZES
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, RequestError

if TYPE_CHECKING:
    from ltxv.pipelines.generate import Pipeline
    from ltxv.pipelines.preflight import Plan
    from ltxv.pipelines.progress import ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate a video (the reference inference.py flags)")
    p.description = "Generate one video. Every input is checked before any weights are read."
    for name, kw in REQUEST_FLAGS:
        add(p, name, **kw)
    add(p, "parallel", type=int, metavar="K", help="split the video over K local processes (CUDA: a GPU each)")
    add_model_flags(p)
    p.set_defaults(run=cmd_generate)


def build_request(a: argparse.Namespace) -> GenerationRequest:
    """The request the flags describe, validated (the list flags checked as the reference does)."""
    paths, frames = a.conditioning_media_paths or [], a.conditioning_start_frames or []
    if bool(paths) != bool(frames):
        raise RequestError(
            "--conditioning-media-paths and --conditioning-start-frames go together (a frame per path)",
            param="conditioning",
        )
    strengths = a.conditioning_strengths or [1.0] * len(paths)
    if not len(paths) == len(frames) == len(strengths):
        counts = f"{len(paths)} media paths, {len(frames)} start frames, {len(strengths)} strengths"
        raise RequestError(f"the conditioning lists must have the same length, got {counts}", param="conditioning")
    same = ("prompt", "negative_prompt", "frame_rate", "seed", "denoise_strength")
    same += ("temporal_tile_frames", "temporal_overlap_frames", "overlap_strength", "adain_factor")
    if a.seconds is not None:
        if not a.seconds > 0:
            raise RequestError(f"--seconds must be > 0, got {a.seconds}", param="num_frames")
        a.num_frames = round(a.seconds * a.frame_rate) + 1
    request = GenerationRequest(
        **{k: getattr(a, k) for k in (*same, "image_cond_noise_scale", "transformer_schedule")},
        **_size(a),
        window_prompts=tuple(a.window_prompts or ()),
        conditioning=tuple(ConditioningMedia(p, f, s) for p, f, s in zip(paths, frames, strengths)),
        input_media=a.input_media_path,
        media_preprocess=not a.no_media_preprocess,
        recipe=recipe_of(a),
        cache=a.cache,
    )
    loras = {k: [parse_lora_arg(x) for x in getattr(a, k) or ()] for k in ("lora", "control_lora", "detailer_lora")}
    request = with_lora_flags(
        request,
        loras=loras["lora"],
        control_video=a.control_video,
        control_preprocess=a.control_preprocess,
        control_loras=loras["control_lora"],
        detailer_loras=loras["detailer_lora"],
    )
    request.validate()
    return request


def _size(a: argparse.Namespace) -> dict[str, int]:
    """The size flags; for a preset whose model was trained at one size (the demo model), that size when all three
    are left at the reference's defaults (704x1216x121)."""
    size = {k: getattr(a, k) for k in ("height", "width", "num_frames")}
    native = NATIVE_SIZES.get(a.preset or "")
    if native and all(v == getattr(GenerationRequest, k) for k, v in size.items()):
        log.info(
            "%s: %dx%dx%d, the size its model was trained at (--height/--width/--num-frames change it)",
            a.preset,
            *native,
        )
        return dict(zip(size, native))
    return size


def output_file(folder: Path, r: GenerationRequest) -> Path:
    """The reference's naming: the prompt's letters, lowercased, first words totalling at most 30 letters."""
    words = "".join(c.lower() for c in r.prompt if c.isalpha() or c.isspace()).split()
    slug = "-".join(w for w, total in zip(words, accumulate(map(len, words))) if total <= 30)
    kind, ext = ("image", ".png") if r.num_frames == 1 else ("video", ".mp4")
    base = f"{kind}_output_0_{slug}_{r.seed}_{r.height}x{r.width}x{r.num_frames}"
    if folder.exists() and not folder.is_dir():
        raise RequestError(f"--output-path {folder}: is a file, not a folder", param="output")
    for k in range(1000):
        if not (path := folder / f"{base}_{k}{ext}").exists():
            return path
    raise RequestError(f"no free output file name {base}_<k>{ext} in {folder}", param="output")


def progress(plan: Plan | None = None) -> ProgressCallback:
    """One labelled bar per denoising pass, with its size (``denoise pass 1/2 (448x800)``), and one for the decode
    (tqdm comes with huggingface_hub)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    sizes = [(p.width, p.height) for p in plan.passes] if plan is not None else []

    def update(e: ProgressEvent) -> None:
        if e.stage not in ("denoise", "decode"):
            return
        label = e.describe()
        if e.stage == "denoise" and e.pass_index < len(sizes):
            label += " ({}x{})".format(*sizes[e.pass_index])
        if label not in bars:
            unit = "step" if e.stage == "denoise" else "frame"
            bars[label] = tqdm(total=e.total, unit=unit, desc=label, file=sys.stderr)
        bar = bars[label]
        if e.t is not None:
            bar.set_postfix_str(f"t={e.t:.4f}")
        bar.update(e.done - bar.n)
        if e.done == e.total:
            bar.close()

    return update


def render(
    pipe: Pipeline, request: GenerationRequest, out: Path, plan: Plan | None = None, *, release: bool = True
) -> None:
    """Generate into ``out``; an mp4 is written block by block as the decoder produces the frames (the memory
    estimate is logged first, the compile time later). In a split run only rank 0 writes. One request per process:
    each model's weights are freed after its last stage (``release``; False where the pipeline runs again)."""
    import json

    import torch

    from ltxv.io.video import Mp4Writer, save_output
    from ltxv.parallel.launch import rank

    if rank() != 0:  # the other ranks of a split run compute their share of every step; rank 0 writes
        pipe.generate(request, release=release)
        return
    if out.suffix.lower() == ".mp4":
        with Mp4Writer(out, request.frame_rate) as writer:
            pipe.generate(request, callback=progress(plan), frames=writer.write, release=release)
    else:  # a png is decoded straight to uint8 (truncated as save_output would), a .safetensors keeps float32
        video_dtype = torch.float32 if out.suffix.lower() == ".safetensors" else torch.uint8
        result = pipe.generate(request, callback=progress(plan), release=release, video_dtype=video_dtype)
        meta = {"step_models": json.dumps(result.step_models)}  # which transformer ran each step of each pass
        save_output(out, result.video, result.latents, fps=request.frame_rate, metadata=meta)  # type: ignore[arg-type]
    print(f"wrote {out}")


def cmd_generate(a: argparse.Namespace) -> None:
    from ltxv.parallel.launch import init_from_env, run_command, world_size_from_env

    request = build_request(a)
    out = Path(a.out) if a.out else output_file(Path(a.output_path or f"outputs/{date.today():%Y-%m-%d}"), request)
    # The destination first (it needs no model), then the models' headers and the rest.
    h, w, f = request.height, request.width, request.num_frames
    check_output(out, num_frames=f, height=h, width=w, fps=a.frame_rate, overwrite=a.overwrite)
    models = ModelChoice.from_args(a, request.recipe)
    checked = models.preflight()
    plan = checked.check(request, out, overwrite=a.overwrite, streamed=out.suffix.lower() == ".mp4")
    if plan.size != (h, w, f):
        log.warning(
            "Padded dimensions: %dx%dx%d (generated at this size, then cropped to %dx%dx%d)", *plan.size, h, w, f
        )
    if a.parallel is not None and a.parallel != 1 and world_size_from_env() == 1:  # checked here, then K ranks
        raise SystemExit(run_command(a.argv, a.parallel, a.device))
    group, device = init_from_env(a.device)  # a process group under torchrun or --parallel: this rank's device
    if group is None:
        return render(models.load(checked), request, out, plan)
    models, checked = _on_rank(a, request, device)
    render(models.load(checked, group=group), request, out, plan)


def _on_rank(a: argparse.Namespace, request: GenerationRequest, device: Any) -> tuple[ModelChoice, Any]:
    """The models checked again for this rank's device (its own GPU under CUDA)."""
    a.device = str(device)
    models = ModelChoice.from_args(a, request.recipe)
    return models, models.preflight()
