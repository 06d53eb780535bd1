"""The procedural scenes and the measurements the demo model's semantic tests rely on: every measurement must read
the truth off a rendered scene (also after an H.264 round trip and a blur), and must say "nothing there" when there
is nothing to measure."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ltxv.testing import scenes as S


def _blur(video: torch.Tensor, k: int = 5) -> torch.Tensor:
    x = video.permute(0, 3, 1, 2)
    kernel = torch.ones(3, 1, k, k) / (k * k)
    return F.conv2d(F.pad(x, [k // 2] * 4, mode="replicate"), kernel, groups=3).permute(0, 2, 3, 1)


def test_every_measurement_reads_the_truth_off_rendered_scenes() -> None:
    rng = random.Random(0)
    for i in range(30):
        scene = S.random_scene(rng)
        size = (128, 128) if i % 3 else (64, 96)
        video = S.render(scene, *size, 25)
        assert video.shape == (25, *size, 3) and video.min() >= 0 and video.max() <= 1
        mask = S.object_mask(video)
        assert S.dominant_colour(video, mask) == scene.colour, scene
        assert S.motion_of(video, mask) == scene.motion, scene
        assert S.shape_of(video, mask) == scene.shape, (scene, S.fill_ratio(video, mask))
        dy, dx = S.displacement(video, mask)
        ey, ex = (a - b for a, b in zip(scene.centre(1.0), scene.centre(0.0)))
        assert abs(dy - ey) < 0.01 and abs(dx - ex) < 0.01, scene  # shapes' centroids move like their centres


def test_measurements_survive_blur_and_an_mp4_round_trip(tmp_path: Path) -> None:
    from ltxv.io.video import read_video, write_mp4

    rng = random.Random(1)
    for i, shape in enumerate(S.SHAPES):
        scene = S.random_scene(rng, shape=shape)
        video = _blur(S.render(scene, 128, 128, 25), 3)
        write_mp4(tmp_path / f"{i}.mp4", (video * 255).round().to(torch.uint8), fps=25)
        back, _ = read_video(tmp_path / f"{i}.mp4")  # uint8, H.264 yuv420p at the reference's CRF
        assert (S.dominant_colour(back), S.motion_of(back), S.shape_of(back)) == (scene.colour, scene.motion, shape)


def test_fill_ratio_is_the_shapes_closed_form() -> None:
    for shape, fill in (("square", 1.0), ("circle", math.pi / 4), ("triangle", 0.5)):
        scene = S.Scene(shape, "white", "still", 0.5, (0.5, 0.5), 0.0, (0.0, 0.0, 0.0))
        assert S.fill_ratio(S.render(scene, 256, 256, 1)) == pytest.approx(fill, abs=0.02)


def test_nothing_to_measure_says_so() -> None:
    dark = torch.full((9, 64, 64, 3), 0.05)
    assert not S.object_mask(dark).any()
    assert S.dominant_colour(dark) is None and S.shape_of(dark) is None and S.motion_of(dark) == "unclear"
    assert math.isnan(S.fill_ratio(dark)) and all(math.isnan(d) for d in S.displacement(dark))


def test_motion_thresholds() -> None:
    def moved(dx: float) -> str:
        scene = S.Scene("circle", "red", "right", 0.2, (0.5, 0.3), dx, (0.0, 0.0, 0.0))
        return S.motion_of(S.render(scene, 128, 128, 25))

    assert moved(0.2) == "right" and moved(0.11) == "right"
    assert moved(0.08) == "unclear"  # between a twentieth and a tenth of the frame
    assert moved(0.03) == "still"


def test_captions_and_their_vocabulary() -> None:
    assert S.caption("red", "circle", "left") == "a red circle moving left"
    assert S.caption("orange", "square", "still") == "an orange square standing still"
    assert S.caption("blue", "triangle", "right", 1) == "a blue triangle moves to the right"
    assert S.caption("blue", "triangle", "up", 1) == "a blue triangle moves up"
    every = {S.caption(c, s, m, v) for c in S.COLOURS for s in S.SHAPES for m in S.MOTIONS for v in range(5)}
    assert len(every) == 8 * 3 * 5 * 5
    assert {w for text in every for w in text.split()} <= set(S.CAPTION_WORDS)


def test_psnr_and_sharpness() -> None:
    video = S.render(S.random_scene(random.Random(2)), 128, 128, 5)
    assert S.psnr(video, video) == math.inf
    assert S.psnr(video, (video + 0.1).clamp(0, 1)) == pytest.approx(20.0, abs=0.5)
    assert S.psnr((video * 255).round().to(torch.uint8), video) > 45
    assert S.sharpness(_blur(video, 5)) < 0.6 * S.sharpness(video)
