"""``ltxv``: ``generate`` (the reference ``inference.py`` flags and defaults), ``demo`` and ``make-tiny``. Thin: flags
become the :class:`GenerationRequest` the API and the service take. Bad input is a one-line error on stderr, exit
status 2, reported before any weights are loaded."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from datetime import date
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from ltxv.pipelines.presets import PRESETS, load_recipe, pipeline_args
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, Recipe, RequestError, padded_size
from ltxv.runtime.residency import MODES
from ltxv.weights.errors import LoadError

if TYPE_CHECKING:
    from ltxv.pipelines.generate import Pipeline
    from ltxv.pipelines.progress import ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)
DEFAULT_PRESET = "ltxv-2b-0.9.8-distilled"
OUTPUT_SUFFIXES = (".mp4", ".png", ".safetensors")
DEMO_PROMPTS = ("A red kite drifts over green hills under a slowly moving sky", "The camera slowly pushes in")
_TYPED = {"height": int, "width": int, "num-frames": int, "frame-rate": float, "image-cond-noise-scale": float}
_MODELS = ("checkpoint", "upsampler", "text_encoder")
_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("prompt", {"required": True}),
    ("negative-prompt", {"default": GenerationRequest.negative_prompt}),
    # The request's field defaults are the reference CLI's.
    *((k, {"type": t, "default": getattr(GenerationRequest, k.replace("-", "_"))}) for k, t in _TYPED.items()),
    ("input-media-path", {"help": "video-to-video source (a video or an image)"}),
    ("conditioning-media-paths", {"nargs": "+", "help": "images or videos to condition on"}),
    ("conditioning-start-frames", {"nargs": "+", "type": int, "help": "the pixel frame of each item"}),
    ("conditioning-strengths", {"nargs": "+", "type": float, "help": "each in [0, 1] (default 1.0 each)"}),
    ("denoise-strength", {"type": float, "help": "video-to-video: start denoising at this noise level"}),
    ("no-media-preprocess", {"action": "store_true", "help": "skip the blur + H.264 round trip on input media"}),
    ("offload-to-cpu", {"action": "store_true", "help": "keep the text encoder on the CPU except while it encodes"}),
    ("output-path", {"help": "output folder (default outputs/<date>), files named like the reference's"}),
    ("out", {"help": "output file instead: .mp4, .png (one frame) or .safetensors (video and latents)"}),
)
_MODEL_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    *((k.replace("_", "-"), {"help": f"overrides the recipe's {k} (a path or a released name)"}) for k in _MODELS),
    ("dtype", {"choices": ["float32", "bfloat16"], "help": "default: the recipe's bf16 where it is fast, else fp32"}),
    ("device", {"help": "default: cuda if available, else cpu"}),
    ("seed", {"type": int, "default": GenerationRequest.seed}),
    ("residency", {"choices": MODES, "help": "which models stay on the device between stages (default resident)"}),
    ("quantize", {"choices": ["fp8"], "help": "quantise the transformer's block linears to fp8 at load"}),
    ("compile", {"action": "store_true", "help": "torch.compile the transformer (compile time reported apart)"}),
)


def _add(p: Any, name: str, **kw: Any) -> None:  # --a-b, and the reference's --a_b spelling
    p.add_argument(f"--{name}", *([f"--{name.replace('-', '_')}"] if "-" in name else []), **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltxv", description="LTX-Video inference")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate a video (the reference inference.py flags)")
    d = sub.add_parser("demo", help="text- and image-to-video on the tiny random model (offline) or given weights")
    _add(d, "out-dir", default="ltxv-demo")
    for p, flags in ((g, _FLAGS + _MODEL_FLAGS), (d, _MODEL_FLAGS)):
        recipe = p.add_mutually_exclusive_group()
        _add(recipe, "preset", metavar="NAME", help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
        _add(recipe, "pipeline-config", help="a reference YAML pipeline config file, or a preset name")
        for name, kw in flags:
            _add(p, name, **kw)
    t = sub.add_parser("make-tiny", help="write the tiny random model kit (checkpoint, upsampler, text encoder)")
    t.add_argument("dir")
    _add(t, "seed", type=int, default=0)
    for p, run in ((g, cmd_generate), (d, cmd_demo), (t, cmd_make_tiny)):
        p.set_defaults(run=run)
    return parser


def build_request(a: argparse.Namespace) -> GenerationRequest:
    """The request the flags describe, validated (the list flags checked as the reference does)."""
    paths, frames = a.conditioning_media_paths or [], a.conditioning_start_frames or []
    if bool(paths) != bool(frames):
        raise RequestError("--conditioning-media-paths and --conditioning-start-frames go together (a frame per path)")
    strengths = a.conditioning_strengths or [1.0] * len(paths)
    if not len(paths) == len(frames) == len(strengths):
        counts = f"{len(paths)} media paths, {len(frames)} start frames, {len(strengths)} strengths"
        raise RequestError(f"the conditioning lists must have the same length, got {counts}")
    if missing := [p for p in (*paths, a.input_media_path) if p is not None and not Path(p).is_file()]:
        raise RequestError(f"no such media file: {', '.join(missing)}")
    same = ("prompt", "negative_prompt", "height", "width", "num_frames", "frame_rate", "seed", "denoise_strength")
    request = GenerationRequest(
        **{k: getattr(a, k) for k in (*same, "image_cond_noise_scale")},
        conditioning=tuple(ConditioningMedia(p, f, s) for p, f, s in zip(paths, frames, strengths)),
        input_media=a.input_media_path,
        media_preprocess=not a.no_media_preprocess,
        recipe=load_recipe(a.preset or a.pipeline_config or DEFAULT_PRESET),
    )
    request.validate()
    return request


def output_file(folder: Path, r: GenerationRequest) -> Path:
    """The reference's naming: the prompt's letters, lowercased, first words totalling at most 30 letters."""
    words = "".join(c.lower() for c in r.prompt if c.isalpha() or c.isspace()).split()
    slug = "-".join(w for w, total in zip(words, accumulate(map(len, words))) if total <= 30)
    kind, ext = ("image", ".png") if r.num_frames == 1 else ("video", ".mp4")
    base = f"{kind}_output_0_{slug}_{r.seed}_{r.height}x{r.width}x{r.num_frames}"
    for k in range(1000):
        if not (path := folder / f"{base}_{k}{ext}").exists():
            return path
    raise RequestError(f"no free output file name {base}_<k>{ext} in {folder}")


def load(a: argparse.Namespace, recipe: Recipe) -> Pipeline:
    from ltxv.pipelines.generate import load_pipeline

    args = pipeline_args(recipe, **{k: getattr(a, k) for k in (*_MODELS, "dtype", "device")})
    residency = a.residency or ("offload-text" if getattr(a, "offload_to_cpu", False) else "resident")
    return load_pipeline(**args, residency=residency, quantize=a.quantize, compile=a.compile)


def progress() -> ProgressCallback:
    """One labelled bar per denoising pass and one for the decode (tqdm comes with huggingface_hub)."""
    bars: dict[str, Any] = {}

    def update(e: ProgressEvent) -> None:
        if e.stage not in ("denoise", "decode"):
            return
        label = e.describe()
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


def render(pipe: Pipeline, request: GenerationRequest, out: Path) -> None:
    from ltxv.io.video import save_output

    result = pipe.generate(request, callback=progress())  # logs the memory estimate first, the compile time later
    save_output(out, result.video, result.latents, fps=request.frame_rate)
    print(f"wrote {out}")


def cmd_generate(a: argparse.Namespace) -> None:
    request = build_request(a)
    h, w, f = request.height, request.width, request.num_frames
    suffix = Path(a.out or "x.mp4").suffix.lower()
    if suffix not in OUTPUT_SUFFIXES or (suffix == ".png" and f != 1):
        raise RequestError(f"--out must end in .mp4, .safetensors, or .png for one frame (--num-frames 1), got {a.out}")
    if (padded := padded_size(h, w, f)) != (h, w, f):
        log.warning("Padded dimensions: %dx%dx%d (generated at this size, then cropped to %dx%dx%d)", *padded, h, w, f)
    out = Path(a.out) if a.out else output_file(Path(a.output_path or f"outputs/{date.today():%Y-%m-%d}"), request)
    render(load(a, request.recipe), request, out)


def cmd_demo(a: argparse.Namespace) -> None:
    from ltxv.io.video import write_png

    out_dir, tiny = Path(a.out_dir), a.checkpoint is None
    h, w, f = (64, 96, 17) if tiny else (480, 704, 97)
    recipe = load_recipe(a.preset or a.pipeline_config or DEFAULT_PRESET)
    t2v = GenerationRequest(DEMO_PROMPTS[0], height=h, width=w, num_frames=f, seed=a.seed, recipe=recipe)
    t2v.validate()
    if tiny:
        from ltxv.testing.checkpoints import write_tiny_kit

        kit = write_tiny_kit(out_dir / "tiny-model")
        a.checkpoint, a.upsampler, a.text_encoder = str(kit.checkpoint), str(kit.upsampler), str(kit.text_encoder)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = out_dir / "i2v-input.png"
    write_png(image, torch.stack([x, y, 1 - x], dim=-1))  # (H, W, 3) in [0, 1]: a colour gradient
    i2v = replace(t2v, prompt=DEMO_PROMPTS[1], conditioning=(ConditioningMedia(str(image)),))
    pipe = load(a, recipe)
    for name, request in (("t2v", t2v), ("i2v", i2v)):
        render(pipe, request, out_dir / f"{name}.mp4")


def cmd_make_tiny(a: argparse.Namespace) -> None:
    from ltxv.testing.checkpoints import write_tiny_kit

    kit = write_tiny_kit(a.dir, seed=a.seed)
    print(f"checkpoint {kit.checkpoint}\nupsampler {kit.upsampler}\ntext encoder {kit.text_encoder}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # no-op if already configured
    logging.getLogger("ltxv").setLevel(logging.INFO)  # what was loaded, the memory estimate, the compile time
    try:
        args.run(args)
    except (RequestError, LoadError) as e:
        print(f"ltxv: error: {e}", file=sys.stderr)
        return 2
    return 0
