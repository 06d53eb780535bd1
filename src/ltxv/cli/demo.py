"""``ltxv demo`` (text- and image-to-video, offline on the demo model shipped with ltxv, or on given weights) and
``ltxv make-tiny`` (the random tiny model kit the tests use). A command that fails removes what it wrote."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ltxv.cli.flags import add, add_model_flags
from ltxv.cli.generate import render
from ltxv.cli.models import OFFLINE_PRESET, ModelChoice, quiet_transformers, recipe_of
from ltxv.io.output import check_folder
from ltxv.io.video import OutputError
from ltxv.pipelines.presets import NATIVE_SIZES
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest
from ltxv.runtime.devices import check_device

DEMO_PROMPTS = ("A red kite drifts over green hills under a slowly moving sky", "The camera slowly pushes in")
# The shipped demo model knows one shape moving on a dark background; its image-to-video input is one it drew.
OFFLINE_PROMPTS = ("a red circle moving right", "a cyan square moving left")
REAL_SIZE = (480, 704, 97)


def register(sub: Any) -> None:
    d = sub.add_parser("demo", help=f"text- and image-to-video on the shipped {OFFLINE_PRESET} model or given weights")
    add(d, "out-dir", default="ltxv-demo", help="where the videos go")
    add_model_flags(d)
    d.set_defaults(run=cmd_demo)
    t = sub.add_parser("make-tiny", help="write the tiny random model kit (checkpoint, upsampler, text encoder)")
    t.add_argument("dir", help="the folder to write into (made if missing)")
    add(t, "seed", type=int, default=0, help="the weights' seed")
    t.set_defaults(run=cmd_make_tiny)


@contextmanager
def removed_on_failure(*paths: Path) -> Iterator[None]:
    """Remove those of ``paths`` that did not exist before, if the block fails (a folder with all it holds)."""
    new = [p for p in paths if not p.exists()]
    try:
        yield
    except BaseException:
        for p in new:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        raise


def cmd_demo(a: argparse.Namespace) -> None:
    from ltxv.io.video import write_png

    out_dir = Path(a.out_dir)
    check_folder(out_dir)
    check_device(a.device)
    if a.checkpoint is None and not (a.preset or a.pipeline_config):
        a.preset = OFFLINE_PRESET  # offline: the model shipped with ltxv
    offline = a.preset == OFFLINE_PRESET
    h, w, f = NATIVE_SIZES.get(a.preset or "", REAL_SIZE)
    prompts = OFFLINE_PROMPTS if offline else DEMO_PROMPTS
    t2v = GenerationRequest(prompts[0], height=h, width=w, num_frames=f, seed=a.seed, recipe=recipe_of(a))
    t2v.validate()
    with removed_on_failure(out_dir, *(out_dir / n for n in ("i2v-input.png", "t2v.mp4", "i2v.mp4"))):
        image = out_dir / "i2v-input.png"
        write_png(image, _first_frame(h, w) if offline else _gradient(h, w))
        i2v = replace(t2v, prompt=prompts[1], conditioning=(ConditioningMedia(str(image)),))
        models = ModelChoice.from_args(a, t2v.recipe)
        checked = models.preflight()
        plans = {
            name: checked.check(r, out_dir / f"{name}.mp4", overwrite=True) for name, r in (("t2v", t2v), ("i2v", i2v))
        }
        pipe = models.load(checked)
        for name, request in (("t2v", t2v), ("i2v", i2v)):
            render(pipe, request, out_dir / f"{name}.mp4", plans[name], release=name == "i2v")  # frees after the last


def _first_frame(h: int, w: int) -> Any:
    """A cyan square on the right, room to move left: what the demo model's image-to-video starts from."""
    from ltxv.testing.scenes import Scene, render

    return render(Scene("square", "cyan", "left", 0.25, (0.5, 0.75), 0.5, (0.02, 0.03, 0.06)), h, w, 1)[0]


def _gradient(h: int, w: int) -> Any:
    import torch

    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([x, y, 1 - x], dim=-1)  # (H, W, 3) in [0, 1]: a colour gradient


def cmd_make_tiny(a: argparse.Namespace) -> None:
    from ltxv.testing.checkpoints import CHECKPOINT_NAME, TEXT_ENCODER_DIR, UPSAMPLER_NAME, write_tiny_kit

    folder = Path(a.dir)
    check_folder(folder)
    quiet_transformers()
    with removed_on_failure(folder, *(folder / n for n in (CHECKPOINT_NAME, UPSAMPLER_NAME, TEXT_ENCODER_DIR))):
        try:
            kit = write_tiny_kit(folder, seed=a.seed)
        except OSError as e:
            raise OutputError(f"{folder}: could not write the tiny model ({e.strerror or e})") from None
    print(f"checkpoint {kit.checkpoint}\nupsampler {kit.upsampler}\ntext encoder {kit.text_encoder}")
