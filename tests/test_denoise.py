"""The denoise closure, the sampler loop and the progress events: the seams step caching, hybrid schedules and
sequence parallelism plug into. Numbers against the plain composition (bit for bit) and closed forms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxv.model.attention import SkipLayerStrategy
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.pipelines.denoise import TransformerCall
from ltxv.pipelines.generate import load_pipeline
from ltxv.pipelines.progress import ProgressEvent
from ltxv.pipelines.request import GenerationRequest, PassSettings, Recipe
from ltxv.testing.checkpoints import write_tiny_kit
from ltxv.testing.configs import TINY_2B
from ltxv.testing.random_weights import random_state_dict


def _model(seed: int = 0) -> Transformer:
    m = Transformer(TINY_2B).eval()
    m.load_state_dict(random_state_dict(m, seed, torch.float32))
    return m


@pytest.mark.parametrize("stg", [False, True])
def test_forward_in_parts_is_the_forward(stg: bool) -> None:
    """embed -> run_blocks (in two slices) -> head equals forward bit for bit, STG mask included."""
    m = _model()
    g = torch.Generator().manual_seed(1)
    b, (f, h, w) = 2, (2, 3, 4)
    tokens = torch.randn(b, f * h * w, TINY_2B.in_channels, generator=g)
    t = torch.rand(b, f * h * w, generator=g)
    text = m.prepare_text(torch.randn(b, 5, TINY_2B.caption_channels, generator=g), torch.ones(b, 5))
    rope = m.rope(pixel_positions(latent_grid(f, h, w, b), causal_fix=True, frame_rate=25.0))
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]]) if stg else None
    strategy = SkipLayerStrategy.ATTENTION_VALUES if stg else None
    with torch.inference_mode():
        whole = m(tokens, None, t, text, rope=rope, skip_layer_mask=mask, skip_layer_strategy=strategy)
        x, mod, emb = m.embed(tokens, t)
        skips = m.skip_masks(mask, b, x.dtype)
        x = m.run_blocks(x, text, mod, rope, skips, strategy, start=0, stop=1)
        x = m.run_blocks(x, text, mod, rope, skips, strategy, start=1)
        parts = m.head(x, emb)
    assert torch.equal(whole, parts)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    kit = write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)
    return load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)


def _request(**kw: object) -> GenerationRequest:
    first = PassSettings(num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, skip_block_list=(1,))
    second = PassSettings(timesteps=(0.9, 0.5, 0.2), guidance_scale=1.0)
    recipe = Recipe(pipeline_type="multi-scale", first_pass=first, second_pass=second, decode_timestep=0.05)
    return GenerationRequest("a fox", height=96, width=128, num_frames=9, seed=3, recipe=recipe, **kw)  # type: ignore[arg-type]


def test_events_in_order_with_the_step_latents(pipe) -> None:
    events: list[ProgressEvent] = []
    result = pipe.generate(_request(), callback=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "text" and "upsample" in stages and stages[-1] == "decode"
    steps = [(e.pass_index, e.done, e.total) for e in events if e.stage == "denoise"]
    assert steps == [(0, i, 4) for i in range(1, 5)] + [(1, i, 3) for i in range(1, 4)]
    assert stages.index("upsample") == 1 + 4  # between the passes
    decode = [e for e in events if e.stage == "decode"]
    assert decode[-1].done == decode[-1].total == 9 and [e.done for e in decode] == sorted(e.done for e in decode)
    last = [e for e in events if e.stage == "denoise"][-1]
    assert last.model == "main" and last.describe() == "denoise pass 2/2"
    assert torch.equal(last.latents, result.latents)
    # The last step goes to t = 0, where the Euler update is exactly the denoised prediction x - t v.
    assert torch.allclose(last.denoised, result.latents, atol=1e-6)
    first = next(e for e in events if e.stage == "denoise")
    assert first.latents.shape[2:] == (2, 1, 2)  # pass 1 at 32 x 64: int(96 * 0.6666666) = 63, down to 32


def test_call_hook_sees_every_evaluation_and_plain_run_is_identical(pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    base = pipe.generate(_request()).video
    calls: list[TransformerCall] = []

    def record(call: TransformerCall) -> torch.Tensor:
        calls.append(call)
        return call.run()

    monkeypatch.setattr(pipe, "transformer_call", lambda request, i: record)
    assert torch.equal(pipe.generate(_request()).video, base)
    assert [c.step for c in calls] == [0, 1, 2, 3, 0, 1, 2]
    assert calls[0].branches == ("uncond", "cond", "perturbed") and calls[0].tokens.shape[0] == 3
    assert calls[-1].branches == ("cond",) and calls[-1].batch == 1
    assert calls[0].skip_mask is not None and calls[0].skip_mask[1].tolist() == [1.0, 1.0, 0.0]


def test_step_models_pick_the_network_per_step(pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two labels for the same weights give the same video; another network on one step changes it; events name the
    network that ran each step."""
    base = pipe.generate(_request()).video
    main = pipe.models.transformer
    twin = _model(seed=0)
    twin.load_state_dict(main.state_dict())
    other = _model(seed=7)

    def schedule(net: Transformer):
        return lambda request, i, n: [("main", main)] + [("other", net)] * (n - 1) if i == 0 else [("main", main)] * n

    events: list[ProgressEvent] = []
    monkeypatch.setattr(pipe, "step_models", schedule(twin))
    assert torch.equal(pipe.generate(_request(), callback=events.append).video, base)
    assert [e.model for e in events if e.stage == "denoise"] == [
        "main",
        "other",
        "other",
        "other",
        "main",
        "main",
        "main",
    ]
    monkeypatch.setattr(pipe, "step_models", schedule(other))
    assert (pipe.generate(_request()).video - base).abs().max() > 1e-3


def test_cancel_by_raising_from_the_callback(pipe) -> None:
    class Cancelled(Exception):
        pass

    seen: list[int] = []

    def cancel_at_second_step(e: ProgressEvent) -> None:
        if e.stage == "denoise":
            seen.append(e.done)
            if e.done == 2:
                raise Cancelled

    with pytest.raises(Cancelled):
        pipe.generate(dataclasses.replace(_request()), callback=cancel_at_second_step)
    assert seen == [1, 2]
