"""The flags: the reference ``inference.py`` ones under the same names and defaults (both ``--a-b`` and ``--a_b``),
and the model flags every command that loads models shares (``generate``, ``demo``, the service's ``serve`` and
``worker``: :func:`add_model_flags`)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from ltxv.pipelines.presets import DEFAULT_PRESET, PRESETS
from ltxv.pipelines.request import FRAME_RATE_RANGE, GenerationRequest
from ltxv.runtime.residency import MODES


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's default in its help line (where it has one worth saying)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse, with a flag error on one line (no usage block): ``ltxv generate: error: ... (see --help)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def add(p: Any, name: str, **kw: Any) -> None:
    """``--a-b``, and the reference's ``--a_b`` spelling."""
    p.add_argument(f"--{name}", *([f"--{name.replace('-', '_')}"] if "-" in name else []), **kw)


_LO, _HI = FRAME_RATE_RANGE
# The request's field defaults are the reference CLI's.
REQUEST_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("prompt", {"required": True, "help": "what the video shows"}),
    ("negative-prompt", {"default": GenerationRequest.negative_prompt, "help": "what it should not show"}),
    ("height", {"type": int, "default": GenerationRequest.height, "help": "pixels (padded up to a multiple of 32)"}),
    ("width", {"type": int, "default": GenerationRequest.width, "help": "pixels (padded up to a multiple of 32)"}),
    ("num-frames", {"type": int, "default": GenerationRequest.num_frames, "help": "frames (padded up to 8k+1)"}),
    ("frame-rate", {"type": float, "default": GenerationRequest.frame_rate, "help": f"fps, {_LO:g} to {_HI:g}"}),
    (
        "image-cond-noise-scale",
        {"type": float, "default": GenerationRequest.image_cond_noise_scale, "help": "noise on hard conditioning"},
    ),
    ("input-media-path", {"help": "video-to-video source (a video or an image)"}),
    ("conditioning-media-paths", {"nargs": "+", "help": "images or videos to condition on"}),
    ("conditioning-start-frames", {"nargs": "+", "type": int, "help": "the pixel frame of each item"}),
    ("conditioning-strengths", {"nargs": "+", "type": float, "help": "each in [0, 1] (default 1.0 each)"}),
    ("denoise-strength", {"type": float, "help": "video-to-video: start denoising at this noise level"}),
    ("no-media-preprocess", {"action": "store_true", "help": "skip the blur + H.264 round trip on input media"}),
    (
        "cache",
        {
            "metavar": "SPEC",
            "help": "step caching: fbc:THRESHOLD or static:START,END,INTERVAL, or off (default: the recipe's)",
        },
    ),
    ("offload-to-cpu", {"action": "store_true", "help": "keep the text encoder on the CPU except while it encodes"}),
    ("output-path", {"help": "output folder (default outputs/<date>), files named like the reference's"}),
    ("out", {"help": "output file instead: .mp4, .png (one frame) or .safetensors (video and latents)"}),
    ("overwrite", {"action": "store_true", "help": "let --out replace an existing file"}),
    # LoRA and IC-LoRA control (ltxv.pipelines.loras.with_lora_flags)
    ("lora", {"action": "append", "metavar": "PATH[:SCALE]", "help": "a LoRA merged for every pass (repeatable)"}),
    ("control-video", {"metavar": "PATH", "help": "an IC-LoRA control video (depth, pose, edges) for the first pass"}),
    ("control-preprocess", {"choices": ["canny"], "help": "make the control video Canny edges of --control-video"}),
    ("control-lora", {"action": "append", "metavar": "PATH[:SCALE]", "help": "the IC-LoRA reading it (first pass)"}),
    (
        "detailer-lora",
        {"action": "append", "metavar": "PATH[:SCALE]", "help": "a detailer IC-LoRA for the last pass, guided by it"},
    ),
    ("seconds", {"type": float, "help": "the length instead of --num-frames: seconds x frame rate + 1 frames"}),
    # Long video: windows once the frames exceed one (windows of 80 beyond 257 frames by default).
    ("temporal-tile-frames", {"type": int, "help": "long video: frames per window (a multiple of 8)"}),
    ("temporal-overlap-frames", {"type": int, "default": GenerationRequest.temporal_overlap_frames}),
    ("overlap-strength", {"type": float, "default": GenerationRequest.overlap_strength}),
    ("adain-factor", {"type": float, "default": GenerationRequest.adain_factor}),
    ("window-prompts", {"nargs": "+", "help": "long video: a prompt per window (default: --prompt split on '|')"}),
    ("transformer-schedule", {"help": 'which transformer runs which steps: "13b:4,2b" or [["13B", 4], ["2B", 9999]]'}),
)
MODELS = ("checkpoint", "upsampler", "text_encoder")


def parse_bytes(text: str) -> int:
    """``24G``, ``1.5GiB``, ``800M``, ``2e9``: bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a memory size like 24G or 800M: {text!r}")
    unit = m.group(2)
    return int(float(m.group(1)) * (1024 ** ("kmgt".index(unit) + 1) if unit else 1))


def add_model_flags(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """The recipe (``--preset`` / ``--pipeline-config``) and model flags."""
    recipe = p.add_mutually_exclusive_group()
    add(recipe, "preset", metavar="NAME", help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    add(recipe, "pipeline-config", metavar="FILE", help="a reference YAML pipeline config file, or a preset name")
    for k in MODELS:
        add(p, k.replace("_", "-"), help=f"overrides the recipe's {k.replace('_', ' ')} (a path or a released name)")
    add(p, "dtype", choices=["float32", "bfloat16"], help="default: the recipe's bf16 where it is fast, else fp32")
    add(p, "device", help="cpu, cuda, cuda:N, mps (default: cuda if available, else cpu)")
    if seed:
        add(p, "seed", type=int, default=GenerationRequest.seed, help="any integer in [-2^63, 2^64 - 1]")
    add(p, "residency", choices=MODES, help="which models stay on the device between stages (default resident)")
    add(p, "quantize", choices=["fp8"], help="quantise the transformer's block linears to fp8 at load")
    add(p, "compile", action="store_true", help="torch.compile the transformer (compile time reported apart)")
    add(p, "hybrid", action="append", metavar="[LABEL=]PATH", help="another checkpoint's transformer, for schedules")
    add(
        p,
        "max-memory",
        type=parse_bytes,
        metavar="SIZE",
        help="device memory a run may use, e.g. 24G (default: what is free)",
    )
