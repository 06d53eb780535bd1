"""Machine-dependent choices (``ltxv.runtime.fastpath``): the memory budget, the decode strategy from the memory a
call may use and what is fast on the device, and the pipeline following the plan with an unchanged video."""

from __future__ import annotations

import pytest
import torch

from ltxv.pipelines.generate import load_pipeline
from ltxv.pipelines.request import GenerationRequest, PassSettings, Recipe
from ltxv.runtime import capability, fastpath
from ltxv.runtime.fastpath import DecodePlan, plan_decode
from ltxv.testing.checkpoints import write_tiny_kit

COST = {None: 1000, 1: 200, 2: 300, 4: 500}


def _plan(monkeypatch, slowdown: float | None, room: int | None) -> DecodePlan:
    monkeypatch.setattr(fastpath, "stream_slowdown", lambda device, dtype: slowdown)
    return plan_decode(COST, device="cpu", dtype=torch.float32, room=room)


def test_streams_when_one_shot_does_not_fit(monkeypatch) -> None:
    assert _plan(monkeypatch, 1.0, 900).chunk_frames == 1


def test_one_shot_where_streaming_is_slow_and_it_fits(monkeypatch) -> None:
    """The Xeon-AMX fp32 row: streaming 2.9x slower; with the memory there, speed is not given away."""
    plan = _plan(monkeypatch, 2.9, 5000)
    assert plan.chunk_frames is None and plan.working == 1000


def test_a_large_one_shot_decode_streams_on_a_cpu(monkeypatch) -> None:
    """Above LARGE_ONE_SHOT the one-shot decode is memory-bound on a CPU (measured slower than streaming at
    704x480x97), whatever the table's ratio for moderate sizes; a GPU keeps the table's choice."""
    monkeypatch.setattr(fastpath, "stream_slowdown", lambda device, dtype: 4.0)
    big = {k: v * 2**21 for k, v in COST.items()}  # one shot: about 2 GiB
    monkeypatch.setattr(fastpath, "LARGE_ONE_SHOT", 2**30)
    assert plan_decode(big, device="cpu", dtype=torch.float32, room=None).chunk_frames == 1
    assert plan_decode(big, device="cuda", dtype=torch.float32, room=None).chunk_frames is None
    assert plan_decode(COST, device="cpu", dtype=torch.float32, room=None).chunk_frames is None  # small: one shot


def test_largest_chunk_that_fits_where_streaming_is_slow(monkeypatch) -> None:
    assert _plan(monkeypatch, 2.9, 400).chunk_frames == 2
    assert _plan(monkeypatch, 2.9, 100).chunk_frames == 1  # nothing fits: the least memory


def test_streams_where_it_is_as_fast(monkeypatch) -> None:
    """Memory saved for free: streaming costs no time on this device."""
    assert _plan(monkeypatch, 1.0, None).chunk_frames == 1
    assert _plan(monkeypatch, 0.7, 5000).chunk_frames == 1


def test_unknown_machine_streams(monkeypatch) -> None:
    assert _plan(monkeypatch, None, 5000).chunk_frames == 1


def test_short_clips_and_groupnorm_decode_in_one_shot() -> None:
    assert plan_decode({None: 10}, device="cpu", dtype=torch.float32, room=None).chunk_frames is None
    assert plan_decode(COST, device="cpu", dtype=torch.float32, room=None, streamable=False).chunk_frames is None


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        ("fpu avx512f amx_bf16 amx_tile avx512_bf16", "cpu-amx"),
        ("avx512f avx512_bf16", "cpu-avx512bf16"),
        ("avx2", "cpu"),
    ],
)
def test_device_class_from_the_cpu_flags(monkeypatch, flags: str, key: str) -> None:
    monkeypatch.setattr(capability, "cpu_flags", lambda: frozenset(flags.split()))
    fastpath.device_class.cache_clear()
    try:
        assert fastpath.device_class("cpu") == key
        assert fastpath.device_class("cuda") == "cuda"
    finally:
        fastpath.device_class.cache_clear()


def test_room_is_the_budget_or_what_is_free(monkeypatch) -> None:
    monkeypatch.setattr(fastpath, "available_memory", lambda device: 10 * 2**30)
    assert fastpath.room("cpu", 2**30) == 2**30
    assert fastpath.room("cpu", None) == int(10 * 2**30 * fastpath.MEMORY_MARGIN)
    monkeypatch.setattr(fastpath, "available_memory", lambda device: None)
    assert fastpath.room("cpu", None) is None


# --------------------------------------------------------------------------------------------------------------------
# The pipeline follows the plan; the video does not depend on it
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    kit = write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)
    return load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder)


def test_decode_follows_the_budget_with_the_same_video(pipe, monkeypatch) -> None:
    request = GenerationRequest(
        "a fox",
        height=64,
        width=96,
        num_frames=25,
        seed=1,
        recipe=Recipe(first_pass=PassSettings(num_inference_steps=2)),
    )
    chunks: list[object] = []
    decode = pipe.models.vae.decode

    def spy(*args: object, **kw: object) -> object:
        chunks.append(kw.get("chunk_frames"))
        return decode(*args, **kw)

    monkeypatch.setattr(pipe.models.vae, "decode", spy)
    monkeypatch.setattr(fastpath, "stream_slowdown", lambda device, dtype: 2.9)  # a machine where streaming is slow
    plans = {}
    videos = {}
    for name, budget in (("ample", None), ("tight", 1)):
        monkeypatch.setattr(fastpath, "available_memory", lambda device, b=budget: b)
        plans[name] = pipe.decode_plan(request)
        videos[name] = pipe.generate(request).video
    assert plans["ample"].chunk_frames is None and plans["tight"].chunk_frames == 1
    assert chunks == [None, 1]
    assert torch.equal(videos["ample"], videos["tight"])  # streamed equals one shot, bit for bit
    # The preflight's estimate is the streamed decode's (the least memory: what must fit); the plan's one shot
    # costs more, and was chosen only because it fits.
    estimate = pipe.memory_estimate(request)
    assert estimate.decode_streaming and estimate.stages[-1].working == plans["tight"].working
    assert plans["ample"].working > plans["tight"].working


def test_one_request_run_frees_the_weights_and_decodes_to_uint8(tmp_path) -> None:
    """``release=True`` (``ltxv generate``): the same video; T5, the transformer and the upsampler hold no weights
    afterwards, and the pipeline refuses a second request. ``video_dtype=uint8``: exactly ``to_uint8`` of the float
    video (what the mp4 writer would make of it)."""
    from ltxv.io.video import to_uint8

    kit = write_tiny_kit(tmp_path / "kit", seed=0)
    request = GenerationRequest("a fox", height=64, width=96, num_frames=9, seed=1)  # the default multi-scale preset
    want = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder).generate(request)
    pipe = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder)
    got = pipe.generate(request, release=True, video_dtype=torch.uint8)
    assert got.video.dtype == torch.uint8
    assert torch.equal(got.video, torch.from_numpy(to_uint8(want.video)))
    assert torch.equal(got.latents, want.latents)
    for model in (pipe.text_encoder.model, pipe.models.transformer, pipe.models.upsampler):
        assert sum(p.numel() for p in model.parameters()) == 0
    with pytest.raises(RuntimeError, match="freed its weights"):
        pipe.generate(request)
