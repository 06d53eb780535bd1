"""``ltxv generate`` with LoRA and control flags: the same video as the API given the same request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ltxv import cli
from ltxv.lora import linear_shapes
from ltxv.pipelines.loras import with_lora_flags
from ltxv.pipelines.request import GenerationRequest, Lora
from ltxv.testing.checkpoints import write_tiny_kit
from ltxv.testing.loras import IC_LORA_TARGETS, block_targets, random_factors, write_lora


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)


def test_lora_and_control_flags_equal_the_api(tmp_path: Path, kit: Any) -> None:
    from safetensors.torch import load_file

    from ltxv.io.video import write_mp4
    from ltxv.model.transformer import Transformer
    from ltxv.pipelines.generate import load_pipeline
    from ltxv.testing.configs import TINY_2B

    with torch.device("meta"):
        shapes = linear_shapes(Transformer(TINY_2B))
    style = write_lora(tmp_path / "style.safetensors", random_factors(shapes, block_targets(shapes), 4, seed=1))
    ic = random_factors(shapes, block_targets(shapes, IC_LORA_TARGETS), 8, seed=2)
    ic_path = write_lora(tmp_path / "ic.safetensors", ic, "comfyui")
    g = torch.Generator().manual_seed(0)
    control = write_mp4(tmp_path / "control.mp4", (torch.rand(9, 80, 120, 3, generator=g) * 255).byte(), 24)
    out = tmp_path / "out.safetensors"
    argv = [
        "generate",
        "--prompt",
        "a tiny test",
        "--height",
        "64",
        "--width",
        "96",
        "--num-frames",
        "9",
        "--seed",
        "5",
    ]
    argv += ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    argv += ["--text-encoder", str(kit.text_encoder), "--device", "cpu", "--dtype", "float32"]
    argv += ["--lora", f"{style}:0.7", "--control-video", str(control), "--control-preprocess", "canny"]
    argv += ["--control-lora", str(ic_path), "--out", str(out)]
    assert cli.main(argv) == 0
    request = with_lora_flags(
        GenerationRequest("a tiny test", height=64, width=96, num_frames=9, seed=5),
        loras=[Lora(str(style), 0.7)],
        control_video=str(control),
        control_preprocess="canny",
        control_loras=[Lora(str(ic_path))],
    )
    assert request.recipe.first_pass.loras == (Lora(str(style), 0.7), Lora(str(ic_path)))
    assert request.recipe.second_pass.loras == (Lora(str(style), 0.7),)  # the IC-LoRA reads pass 1's control only
    pipe = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)
    result = pipe.generate(request)
    stored = load_file(str(out))
    torch.testing.assert_close(stored["latents"], result.latents, rtol=0, atol=0)
    plain = pipe.generate(GenerationRequest("a tiny test", height=64, width=96, num_frames=9, seed=5))
    assert (plain.latents - result.latents).abs().max() > 1e-3  # the flags did something
