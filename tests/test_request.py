"""Request validation: every impossible value gives a RequestError naming it."""

from __future__ import annotations

import dataclasses

import pytest

from ltxv.pipelines.request import (
    ConditioningMedia,
    GenerationRequest,
    PassSettings,
    Recipe,
    RequestError,
    padded_size,
)


def _req(**kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"num_frames": 0}, "num_frames must be a positive integer"),
        ({"height": -32}, "height must be a positive integer"),
        ({"width": 12.5}, "width must be a positive integer"),
        ({"frame_rate": 0.0}, r"frame_rate must be a number of frames per second in \[1, 240\], got 0.0"),
        (
            {"conditioning": (ConditioningMedia("x.png", 0, 1.5),)},
            r"conditioning\[0\].strength must be a number in \[0, 1\], got 1.5",
        ),
        ({"conditioning": (ConditioningMedia("x.png", 0, -0.1),)}, r"strength must be a number in \[0, 1\]"),
        (
            {"num_frames": 25, "conditioning": (ConditioningMedia("x.png", 25),)},
            r"start frame 25 is outside the video \(0..24\)",
        ),
        ({"conditioning": (ConditioningMedia("x.png", -1),)}, "start frame -1 is outside"),
        ({"denoise_strength": 0.5}, "denoise_strength is for video-to-video"),
        ({"input_media": "v.mp4", "denoise_strength": 0.0}, r"denoise_strength must be a number in \(0, 1\]"),
        ({"image_cond_noise_scale": -1.0}, "image_cond_noise_scale must be a number >= 0"),
        ({"recipe": Recipe(stg_mode="bogus")}, "stg_mode must be one of"),
        ({"recipe": Recipe(pipeline_type="multi-scale")}, "needs a second_pass"),
        ({"recipe": Recipe(first_pass=PassSettings(guidance_scale=(1.0, 2.0)))}, "need guidance_timesteps"),
        (
            {"recipe": Recipe(first_pass=PassSettings(guidance_scale=(1.0, 2.0), guidance_timesteps=(1.0,)))},
            "guidance_scale has 2 entries but guidance_timesteps has 1",
        ),
        (
            {"recipe": Recipe(first_pass=PassSettings(timesteps=(1.0, 1.5)))},
            r"timesteps must be a non-empty list in \(0, 1\]",
        ),
        ({"recipe": Recipe(first_pass=PassSettings(tone_map_compression_ratio=2.0))}, "tone_map_compression_ratio"),
    ],
)
def test_impossible_requests(kw: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        _req(**kw).validate()


@pytest.mark.parametrize("prompt", [None, 3, ["a", "b"]])
def test_prompt_must_be_a_string(prompt: object) -> None:
    with pytest.raises(RequestError, match="prompt must be a string"):
        GenerationRequest(prompt=prompt).validate()  # type: ignore[arg-type]


def test_valid_request_passes() -> None:
    req = _req(conditioning=(ConditioningMedia("a.png", 0), ConditioningMedia("b.png", 120, 0.5)))
    req.validate()
    assert dataclasses.replace(req, num_frames=1).recipe == req.recipe


@pytest.mark.parametrize(
    ("hwf", "want"),
    [
        ((704, 1216, 121), (704, 1216, 121)),
        ((480, 848, 120), (480, 864, 121)),
        ((50, 90, 12), (64, 96, 17)),
        ((32, 32, 1), (32, 32, 1)),
    ],
)
def test_padding_rule_matches_reference_cli(hwf: tuple[int, int, int], want: tuple[int, int, int]) -> None:
    assert padded_size(*hwf) == want
