"""Semantic quality of a pipeline on the demo model's scenes: does the clip show the prompt's colour, shape and motion?

A :class:`Case` is a caption of :mod:`ltxv.testing.scenes` and a seed; :func:`run_case` generates it, writes the clip
as an mp4, reads it back (so the measurement sees what a user gets, H.264 and all) and measures it;
:func:`score` turns outcomes into the three rates. Image-to-video cases (:func:`run_i2v_case`) condition on a first
frame drawn from a scene and also report how faithfully frame 0 keeps it.

Meant for any change that should not hurt the picture (step caching, long video, fp8...): run the same cases before
and after, compare the rates::

    pipe = ltxv.load(**pipeline_args(get_preset("ltxv-demo"), dtype="float32", device="cpu"))
    outcomes = [run_case(pipe, case, get_preset("ltxv-demo")) for case in spread(30)]
    print(score(outcomes))  # {'colour': 1.0, 'motion': 0.97, 'shape': 0.9}
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ltxv.testing import scenes as S

if TYPE_CHECKING:
    from ltxv.pipelines.generate import Pipeline
    from ltxv.pipelines.request import Recipe

SIZE = (128, 128, 25)  # height, width, frames the demo model was trained at
FPS = 25.0


@dataclass(frozen=True)
class Case:
    shape: str
    colour: str
    motion: str
    seed: int
    variant: int = 0  # which paraphrase of the caption

    @property
    def prompt(self) -> str:
        return S.caption(self.colour, self.shape, self.motion, self.variant)


@dataclass(frozen=True)
class Outcome:
    """What was measured on a generated clip (None / "unclear" where nothing could be measured)."""

    case: Case
    colour: str | None
    motion: str
    shape: str | None
    displacement: tuple[float, float]  # (dy, dx) over the clip, fractions of the frame
    fill: float
    frame0_psnr: float | None = None  # image-to-video: frame 0 against the conditioning image, dB
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> dict[str, bool]:
        c = self.case
        return {"colour": self.colour == c.colour, "motion": self.motion == c.motion, "shape": self.shape == c.shape}


def spread(n: int, *, first_seed: int = 1000) -> list[Case]:
    """``n`` cases covering the colours, shapes and motions evenly (all combinations differ up to 120), paraphrases
    and seeds varying with them."""
    return [
        Case(
            S.SHAPES[i % len(S.SHAPES)],
            list(S.COLOURS)[i % len(S.COLOURS)],
            S.MOTIONS[i % len(S.MOTIONS)],
            first_seed + i,
            (i // len(S.MOTIONS)) % len(S.MOVING_CAPTIONS),
        )
        for i in range(n)
    ]


def measure(video: torch.Tensor, case: Case, **extra: object) -> Outcome:
    """Measure a clip (F, H, W, 3), uint8 or float in [0, 1], against the case it was generated for."""
    mask = S.object_mask(video)
    return Outcome(
        case=case,
        colour=S.dominant_colour(video, mask),
        motion=S.motion_of(video, mask),
        shape=S.shape_of(video, mask),
        displacement=S.displacement(video, mask),
        fill=S.fill_ratio(video, mask),
        **extra,  # type: ignore[arg-type]
    )


def through_mp4(video: torch.Tensor, folder: Path | None = None, name: str = "clip.mp4") -> torch.Tensor:
    """The clip (F, H, W, 3) float in [0, 1] as it comes back from an mp4 written by ltxv: (F, H, W, 3) uint8."""
    from ltxv.io.video import read_video, save_output

    with tempfile.TemporaryDirectory() as tmp:
        path = (folder or Path(tmp)) / name
        save_output(path, video, fps=FPS)
        back, _ = read_video(path)
    return back


def request(case: Case, recipe: Recipe, size: tuple[int, int, int] = SIZE, **kwargs: object) -> object:
    from ltxv.pipelines.request import GenerationRequest

    h, w, f = size
    return GenerationRequest(
        case.prompt, height=h, width=w, num_frames=f, frame_rate=FPS, seed=case.seed, recipe=recipe, **kwargs
    )


def run_case(pipe: Pipeline, case: Case, recipe: Recipe, *, folder: Path | None = None) -> Outcome:
    """Generate ``case`` (text-to-video at :data:`SIZE`), round-trip it through an mp4 and measure it."""
    video = pipe.generate(request(case, recipe)).video  # type: ignore[arg-type]
    return measure(through_mp4(video, folder, f"t2v-{case.seed}.mp4"), case)


def i2v_scene(case: Case) -> S.Scene:
    """The scene whose first frame conditions an image-to-video case: the case's shape and colour, placed where the
    case's motion has room (drawn from the case's seed)."""
    return S.random_scene(random.Random(case.seed), shape=case.shape, colour=case.colour, motion=case.motion)


def run_i2v_case(pipe: Pipeline, case: Case, recipe: Recipe, *, folder: Path | None = None) -> Outcome:
    """Image-to-video: frame 0 of :func:`i2v_scene` drawn, given as the conditioning image at frame 0 with the case's
    prompt; the outcome also holds frame 0's PSNR against the drawn image (after the mp4 round trip)."""
    from ltxv.pipelines.request import ConditioningMedia

    h, w, _ = SIZE
    image = S.render(i2v_scene(case), h, w, 1)[0]  # (H, W, 3) in [0, 1]
    media = ConditioningMedia(image.permute(2, 0, 1) * 2 - 1, frame=0)  # (3, H, W) in [-1, 1]
    video = pipe.generate(request(case, recipe, conditioning=(media,))).video  # type: ignore[arg-type]
    back = through_mp4(video, folder, f"i2v-{case.seed}.mp4")
    return measure(back, case, frame0_psnr=S.psnr(back[0], image))


def score(outcomes: list[Outcome]) -> dict[str, float]:
    """The fraction of outcomes whose colour, motion and shape match their case."""
    n = max(len(outcomes), 1)
    return {k: sum(o.ok[k] for o in outcomes) / n for k in ("colour", "motion", "shape")}
