"""The preflight against what the pipeline then does: the sizes it computes from headers equal the loaded models',
its memory estimate is within 25% of the measured peak from the tiny model's demo size up to 100x its frames, and
the checks hold where the table of bad inputs cannot show them (an inert STG block, residency advice, a full disk,
content sniffing)."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxv.errors import LtxvError
from ltxv.pipelines.preflight import Preflight
from ltxv.pipelines.presets import DEFAULT_PRESET, PRESETS, get_preset
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, PassSettings, RequestError
from ltxv.quant.fp8 import module_bytes


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ltxv.testing.checkpoints import write_tiny_kit

    return write_tiny_kit(tmp_path_factory.mktemp("tiny"))


def _files(kit: Any) -> tuple[Path, Path, Path]:
    return kit.checkpoint, kit.upsampler, kit.text_encoder


def _request(**kw: Any) -> GenerationRequest:
    return GenerationRequest(**({"prompt": "a kite over hills", "height": 64, "width": 96, "num_frames": 17} | kw))


def _resident(m: Any) -> int:
    """Bytes of the tensors a module holds in memory (a lazy encoder not yet read holds none)."""
    tensors = {id(t): t for t in (*m.parameters(), *m.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values() if not t.is_meta)


@pytest.mark.parametrize(
    ("dtype", "quantize"), [(torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, "fp8")]
)
def test_sizes_from_headers_equal_the_loaded_models(kit: Any, dtype: torch.dtype, quantize: str | None) -> None:
    from ltxv.pipelines.generate import load_pipeline

    pre = Preflight.from_files(*_files(kit), dtype=dtype, device="cpu", quantize=quantize)
    pipe = load_pipeline(
        *_files(kit)[:1], upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=dtype, quantize=quantize
    )
    m = pipe.models
    loaded = {
        "text_encoder": module_bytes(pipe.text_encoder.model),
        "transformer": module_bytes(m.transformer),
        "vae": module_bytes(m.vae),  # the lazy encoder counted: a run that encodes reads it
        "upsampler": module_bytes(m.upsampler),
    }
    assert pre.sizes.weights == loaded
    assert pre.sizes.lazy_encoder == module_bytes(m.vae.encoder) > 0
    assert pre.files == {"checkpoint": kit.checkpoint, "upsampler": kit.upsampler, "text_encoder": kit.text_encoder}
    # The two preflights plan the same run.
    request = _request()
    assert pre.plan(request).memory == pipe.preflight.plan(request).memory


def _peak_bytes(fn: Any) -> int:
    """Peak bytes of tensors allocated during ``fn`` above what was alive before (CPU, via the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    alive = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        alive += e.self_cpu_memory_usage
        peak = max(peak, alive)
    return peak


def _measure(kit: Any, tmp_path: Path, frames: int, conditioning: tuple = ()) -> tuple[int, int]:
    from ltxv.io.video import save_output
    from ltxv.pipelines.generate import load_pipeline

    pipe = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)
    request = _request(num_frames=frames, conditioning=conditioning)
    estimate = pipe.memory_estimate(request).peak
    held = sum(_resident(m) for m in (pipe.models.transformer, pipe.models.vae, pipe.models.upsampler))
    held += _resident(pipe.text_encoder.model)

    def run() -> None:
        result = pipe.generate(request)
        save_output(tmp_path / "out.mp4", result.video, result.latents, fps=request.frame_rate)

    with torch.inference_mode():
        measured = held + _peak_bytes(run)
    return estimate, measured


@pytest.mark.parametrize("frames", [17, 170, pytest.param(1700, marks=pytest.mark.slow)])
def test_memory_estimate_is_within_25_percent_of_the_measured_peak(kit: Any, tmp_path: Path, frames: int) -> None:
    """The demo's size (64x96x17) up to 100x its frames, default preset, float32 on the CPU: the weights held plus
    the peak of what the run allocates (the profiler's count of every tensor), against the estimate. Measured here
    (ratio estimate / measured): 0.99 at 17 frames, 0.90 at 170, 0.97 at 1700 (1.04 at 17 with an image to
    encode); the decode's float32 result dominates from 170 frames on."""
    estimate, measured = _measure(kit, tmp_path, frames)
    assert 0.75 <= estimate / measured <= 1.25, (frames, estimate / 2**20, measured / 2**20)


def test_memory_estimate_with_an_encoded_image(kit: Any, tmp_path: Path) -> None:
    from ltxv.io.video import write_png

    image = write_png(tmp_path / "i.png", torch.rand(64, 96, 3, generator=torch.Generator().manual_seed(0)))
    estimate, measured = _measure(kit, tmp_path, 17, (ConditioningMedia(str(image)),))
    assert 0.75 <= estimate / measured <= 1.25, (estimate / 2**20, measured / 2**20)


def test_memory_estimate_at_100000_frames_counts_the_float32_result(kit: Any) -> None:
    """The issue's run: 100000 frames of 64x96 allocated 7.4 GB (the float32 video the decode writes into) where the
    estimate said 2.3 GiB. Now the estimate carries that tensor, and a limit below it refuses the run."""
    pre = Preflight.from_files(*_files(kit), dtype=torch.bfloat16, device="cpu")
    plan = pre.plan(_request(num_frames=100_000))
    result = 100_000 * 64 * 96 * 3 * 4  # 7.37e9 bytes
    assert plan.memory.peak_stage == "decode"
    assert result <= plan.memory.peak <= 1.1 * result
    tight = Preflight.from_files(*_files(kit), dtype=torch.bfloat16, device="cpu", max_memory=4 * 2**30)
    with pytest.raises(RequestError, match=r"needs about 6\.8\d GiB .* the limit \(max_memory\) is 4\.00 GiB") as e:
        tight.check(_request(num_frames=100_000))
    assert e.value.code == "memory" and e.value.param == "num_frames"


def test_residency_advice_names_the_mode_that_fits(kit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a device whose memory holds the largest stage but not every model at once, the refusal says which
    residency mode would fit (the device is a stand-in: only its kind and free memory are asked)."""
    from ltxv.pipelines import preflight as module

    pre = Preflight.from_files(*_files(kit), dtype=torch.float32, device="cpu")
    pre.device = torch.device("cuda")
    plan = {m: pre.plan(_request(), mode=m).memory.peak for m in ("resident", "sequential")}
    assert plan["sequential"] < plan["resident"]
    monkeypatch.setattr(module, "available_memory", lambda device: (plan["sequential"] + plan["resident"]) // 2)
    with pytest.raises(
        RequestError,
        match=r"of memory \(peak in .*, resident\) but what is free on cuda is .*; "
        r"residency 'sequential' would fit",
    ):
        pre.check(_request())
    pre.residency = "sequential"
    pre.check(_request())  # fits


def test_inert_stg_blocks_pass_and_active_ones_are_refused_at_their_step(kit: Any) -> None:
    """The released 2B distilled recipe lists block 42 with STG off: it runs on a 2-layer model. The same list with
    STG on is refused, naming the step where it would act."""
    pre = Preflight.from_files(*_files(kit), dtype=torch.float32, device="cpu")
    distilled = get_preset(DEFAULT_PRESET)
    assert distilled.first_pass.skip_block_list == (42,) and distilled.first_pass.stg_scale == 0.0
    pre.check(_request(recipe=distilled))
    active = replace(distilled, first_pass=replace(distilled.first_pass, stg_scale=1.0))
    with pytest.raises(RequestError, match=r"first_pass.skip_block_list: STG perturbs block\(s\) \[42\] at step 0 "):
        pre.check(_request(recipe=active))
    # Per step: inert where guidance_timesteps says STG is off, refused where it turns on.
    settings = PassSettings(
        num_inference_steps=4,
        guidance_timesteps=(1.0, 0.5),
        guidance_scale=(1.0, 1.0),
        stg_scale=(1.0, 0.0),
        skip_block_list=((1,), (9,)),
    )
    pre.check(_request(recipe=replace(PRESETS["ltxv-2b-0.9.6-distilled"], first_pass=settings)))
    late = replace(settings, stg_scale=(0.0, 1.0))
    with pytest.raises(RequestError, match=r"\[9\] at step 1 "):
        pre.check(_request(recipe=replace(PRESETS["ltxv-2b-0.9.6-distilled"], first_pass=late)))


def test_pipeline_generate_refuses_before_computing(kit: Any) -> None:
    from ltxv.pipelines.generate import load_pipeline

    pipe = load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32)  # no upsampler
    calls: list[Any] = []
    pipe.text_encoder.encode = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    with pytest.raises(RequestError, match="the recipe is multi-scale: it needs a latent upsampler") as e:
        pipe.generate(_request())
    assert e.value.param == "upsampler" and calls == []


def test_the_api_defaults_are_the_clis(kit: Any) -> None:
    from ltxv.pipelines.presets import default_dtype

    assert GenerationRequest("x").recipe == PRESETS[DEFAULT_PRESET]
    pre = Preflight.from_files(*_files(kit))
    assert pre.dtype == default_dtype("cpu", PRESETS[DEFAULT_PRESET].precision) and pre.device == torch.device("cpu")


# --- outputs ----------------------------------------------------------------------------------------------------------


def test_a_full_disk_is_refused_before_and_a_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltxv.io import output, video

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    with pytest.raises(LtxvError, match=r"out\.safetensors: 0\.0 MiB free in .*, the output needs about 0\.6 MiB"):
        output.check_output(tmp_path / "out.safetensors", num_frames=9, height=64, width=96, fps=30)
    monkeypatch.undo()

    # The disk fills up while writing: one line, and neither the partial file nor the folders made for it stay.
    def full(*a: Any, **k: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(video.os, "replace", full)
    with pytest.raises(
        video.OutputError, match=r"deep/er/v\.mp4: could not write the output \(No space left on device\)"
    ):
        video.save_output(tmp_path / "deep" / "er" / "v.mp4", torch.rand(3, 16, 16, 3), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_streamed_safetensors_equal_the_reference_writer(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from ltxv.weights.safetensors_file import read_header, write_safetensors

    tensors = {"video": torch.rand(3, 5, 7, 3), "latents": torch.randn(1, 16, 2, 1, 3).bfloat16()}
    write_safetensors(tmp_path / "ours.safetensors", tensors, {"k": "v"})
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    ours, theirs = load_file(str(tmp_path / "ours.safetensors")), load_file(str(tmp_path / "theirs.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert read_header(tmp_path / "ours.safetensors").metadata == {"k": "v"}


# --- content, not names -----------------------------------------------------------------------------------------------


def test_media_are_read_by_content_not_by_name(tmp_path: Path) -> None:
    from PIL import Image

    from ltxv.io.media import load_media
    from ltxv.io.probe import probe_media
    from ltxv.io.video import write_mp4, write_png

    png = write_png(tmp_path / "a.png", torch.rand(64, 96, 3, generator=torch.Generator().manual_seed(1)))
    Image.open(png).save(tmp_path / "real.jpg", format="JPEG")
    shutil.copy(tmp_path / "real.jpg", tmp_path / "jpeg-named.png")
    mp4 = write_mp4(tmp_path / "v.mp4", torch.rand(9, 64, 96, 3, generator=torch.Generator().manual_seed(2)), 24)
    shutil.copy(mp4, tmp_path / "video-named.png")
    assert probe_media(tmp_path / "jpeg-named.png").kind == "image"
    info = probe_media(tmp_path / "video-named.png")
    assert (info.kind, info.frames, info.height, info.width) == ("video", 9, 64, 96)
    assert torch.equal(load_media(tmp_path / "jpeg-named.png", 64, 96, 1), load_media(tmp_path / "real.jpg", 64, 96, 1))
    assert torch.equal(load_media(tmp_path / "video-named.png", 64, 96, 9), load_media(mp4, 64, 96, 9))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"GGUF\x03\x00\x00\x00", "a GGUF file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "a Git LFS pointer"),
        (b"  <!doctype html><title>x</title>", "an HTML page"),
        (b'{"error": "Repository not found"}', "a JSON document"),
        (b"\x1f\x8b\x08\x00", "a gzip archive"),
        (b"\x80\x04\x95\x10\x00", "a pickle"),
        (b"plain words\n", "a text file"),
    ],
)
def test_files_are_named_for_what_they_are(tmp_path: Path, data: bytes, what: str) -> None:
    import ltxv

    p = tmp_path / "model.safetensors"
    p.write_bytes(data + b"\x00" * 0 if data.startswith(b"GGUF") else data)
    with pytest.raises(ltxv.LoadError, match=f"model.safetensors: this is {what}"):
        ltxv.load_models(p)


def test_a_zip_that_is_not_a_torch_checkpoint_is_a_zip(tmp_path: Path) -> None:
    import zipfile

    import ltxv

    with zipfile.ZipFile(tmp_path / "weights.safetensors", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ltxv.LoadError, match="this is a zip archive, not a safetensors file"):
        ltxv.load_models(tmp_path / "weights.safetensors")


def test_the_long_prompt_warning_is_ltxvs_only(kit: Any, caplog: pytest.LogCaptureFixture) -> None:
    """transformers' tokenizer warns that a long prompt 'will result in indexing errors' though it is truncated; only
    ltxv's truncation note remains."""
    from transformers.utils import logging as hf_logging

    from ltxv.text.t5 import TextEncoder

    encoder = TextEncoder.from_pretrained(kit.text_encoder)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            encoder.encode(["a red fox runs " * 200])
    finally:
        hf_logging.disable_propagation()
    messages = [r.getMessage() for r in caplog.records]
    assert any("prompt truncated to 256 tokens" in m for m in messages)
    assert not any("indexing errors" in m or "sequence length is longer" in m for m in messages), messages
