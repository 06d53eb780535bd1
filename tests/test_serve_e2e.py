"""The service on the real pipeline (the tiny model in the official format): a video from the service equals
``ltxv generate`` of the same request and seed, frame for frame; the preview's denoised estimate is the pass's own
arithmetic; the latent-to-RGB map is a least-squares fit that recovers a known map and predicts held-out frames."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import openai
import pytest
import torch
from PIL import Image
from serve_support import TOKEN, live_server, thread_workers

from ltxv import cli
from ltxv.pipelines.presets import get_preset
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest
from ltxv.serve import preview as preview_mod
from ltxv.serve.cli import DEMO_MODEL
from ltxv.serve.engine import PipelineEngine, load_engine
from ltxv.serve.preview import LatentRGB, cached_latent_rgb, latent_pairs, solve, synthetic_clips
from ltxv.serve.worker import Step, WorkerConfig
from ltxv.testing.checkpoints import TinyKit, write_tiny_kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> TinyKit:
    return write_tiny_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="module")
def engine(kit: TinyKit, tmp_path_factory: pytest.TempPathFactory) -> PipelineEngine:
    models = {
        "checkpoint": str(kit.checkpoint),
        "upsampler": str(kit.upsampler),
        "text_encoder": str(kit.text_encoder),
        "dtype": torch.float32,
        "device": "cpu",
        "residency": "resident",
        "quantize": None,
        "compile": False,
    }
    recipe = get_preset(cli.DEFAULT_PRESET)
    return load_engine(
        models, names=(DEMO_MODEL,), default_recipe=recipe, preview_cache=tmp_path_factory.mktemp("maps")
    )


def frames_of(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_a_video_from_the_service_equals_ltxv_generate(tmp_path: Path, kit: TinyKit, engine: PipelineEngine) -> None:
    image = tmp_path / "first-frame.png"
    y, x = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([x * 2, y * 3, 255 - x * 2], -1).astype(np.uint8)).save(image)
    model = [
        "--checkpoint",
        str(kit.checkpoint),
        "--upsampler",
        str(kit.upsampler),
        "--text-encoder",
        str(kit.text_encoder),
    ]
    model += ["--dtype", "float32", "--device", "cpu"]
    request = ["--prompt", "a kite over hills", "--width", "96", "--height", "64", "--num-frames", "17", "--seed", "5"]
    with live_server(tmp_path / "store", token=TOKEN, models=(DEMO_MODEL,)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=TOKEN, max_retries=0)
        with thread_workers(live, 1, engine=engine, progress_s=0.0, preview_s=0.0):
            t2v = client.videos.create_and_poll(
                prompt="a kite over hills", size="96x64", extra_body={"num_frames": 17, "seed": 5}, poll_interval_ms=50
            )
            i2v = client.videos.create_and_poll(
                prompt="a kite over hills",
                size="96x64",
                input_reference=("photo.png", image.read_bytes(), "image/png"),
                extra_body={"num_frames": 17, "seed": 5},
                poll_interval_ms=50,
            )
        assert t2v.status == i2v.status == "completed", (t2v.error, i2v.error)
        served = [client.videos.download_content(v.id).read() for v in (t2v, i2v)]
        assert t2v.model_extra["ltxv"]["preview"] is not None
        strip = Image.open(io.BytesIO(live.client().get(f"/v1/videos/{t2v.id}/preview").content))
        assert strip.size[1] == WorkerConfig().preview_height
    for k, (name, extra) in enumerate(
        (("t2v", []), ("i2v", ["--conditioning-media-paths", str(image), "--conditioning-start-frames", "0"]))
    ):
        out = tmp_path / f"{name}.mp4"
        assert cli.main(["generate", *request, *model, *extra, "--out", str(out)]) == 0
        expected = frames_of(out.read_bytes())
        assert expected.shape == (17, 64, 96, 3)
        assert np.array_equal(frames_of(served[k]), expected), name  # the same decoded frames
        assert served[k] == out.read_bytes(), name  # and the same file, byte for byte
    assert served[0] != served[1]


@pytest.mark.parametrize("keyframe", [False, True])
def test_the_preview_estimate_is_x0_of_the_conditional_branch(
    tmp_path: Path, engine: PipelineEngine, keyframe: bool
) -> None:
    """At the last step of the distilled recipe (one branch, the step goes to t = 0), the denoised prediction is what
    the step computes, so the preview's estimate equals the pass's final latents; with a keyframe, the appended
    tokens are not part of it. The worker's steps come in order, passes counted, then the upsample and the decode."""
    conditioning: tuple[ConditioningMedia, ...] = ()
    if keyframe:
        image = tmp_path / "key.png"
        Image.new("RGB", (96, 64), (10, 200, 90)).save(image)
        conditioning = (ConditioningMedia(str(image), frame=8, strength=1.0),)
    request = GenerationRequest(
        "a fox",
        height=64,
        width=96,
        num_frames=17,
        seed=3,
        conditioning=conditioning,
        recipe=get_preset(cli.DEFAULT_PRESET),
    )
    everything: list[tuple[Step, torch.Tensor]] = []
    video = engine.generate(request, lambda s: everything.append((s, s.latents())))
    seen = [(s, x) for s, x in everything if s.stage == "denoise"]
    assert [(s.pass_index, s.step) for s, _ in seen] == [(0, i) for i in range(7)] + [(1, i) for i in range(3)]
    stages = [s.stage for s, _ in everything]
    decodes = stages.count("decode")
    assert decodes >= 1 and stages == ["denoise"] * 7 + ["upsample"] + ["denoise"] * 3 + ["decode"] * decodes
    assert all(s.passes == 2 for s, _ in seen) and seen[0][1].shape == (1, 16, 3, 1, 1)
    result = engine.pipe.generate(request, video_dtype=torch.uint8)  # the engine asks for the frames an mp4 stores
    torch.testing.assert_close(seen[-1][1], result.latents, rtol=0, atol=1e-5)
    assert video.dtype == torch.uint8 and torch.equal(video, result.video)  # reading the events changes nothing
    rgb = engine.preview(seen[-1][1])
    _, _, f, h, w = result.latents.shape
    assert rgb.shape == (f, h, w, 3) and rgb.dtype == np.uint8


def test_the_least_squares_fit_recovers_a_known_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(16, 3, generator=g) * 0.2, torch.tensor([0.1, -0.2, 0.05])
    z = torch.randn(500, 16, generator=g)
    fitted = solve(z, z @ w + b, ridge=0.0)
    torch.testing.assert_close(fitted.weight, w, atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.bias, b, atol=1e-5, rtol=0)
    assert solve(z, z @ w + b).weight.sub(w).abs().max() < 1e-2  # the ridge term barely moves a well-posed fit


def test_the_fitted_map_predicts_held_out_decoded_frames_and_is_cached(
    tmp_path: Path, kit: TinyKit, engine: PipelineEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vae = engine.pipe.models.vae
    m = engine.preview_map
    assert m is not None and m.weight.shape == (vae.latent_channels, 3)
    with torch.inference_mode():
        z, rgb = latent_pairs(vae, synthetic_clips(3, 9, 96, 96, seed=99))  # clips the fit never saw
    residual = (z @ m.weight + m.bias - rgb).pow(2).mean()
    assert residual < 0.9 * (rgb - rgb.mean(0)).pow(2).mean()  # better than the best constant colour
    m.save(tmp_path / "m.safetensors")
    again = LatentRGB.load(tmp_path / "m.safetensors")
    assert torch.equal(again.weight, m.weight) and torch.equal(again.bias, m.bias)

    def no_fit(*args: Any, **kw: Any) -> None:
        raise AssertionError("fitted again")

    cache = tmp_path / "cache"
    first = cached_latent_rgb(vae, kit.checkpoint, cache)
    monkeypatch.setattr(preview_mod, "fit_latent_rgb", no_fit)
    assert torch.equal(cached_latent_rgb(vae, kit.checkpoint, cache).weight, first.weight)


def test_loras_by_name_step_caching_and_windows_from_the_service_equal_ltxv_generate(
    tmp_path: Path, kit: TinyKit, engine: PipelineEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's LoRA, cache and long-video fields run what ``ltxv generate`` runs with the same flags: the same
    mp4, byte for byte (a LoRA named from ``--lora-dir``, switched per job in the warm pipeline, and off again)."""
    from ltxv.lora import linear_shapes
    from ltxv.model.transformer import Transformer
    from ltxv.pipelines.loras import LoraRegistry
    from ltxv.testing.configs import TINY_2B
    from ltxv.testing.loras import block_targets, random_factors, write_lora

    with torch.device("meta"):
        shapes = linear_shapes(Transformer(TINY_2B))
    style = write_lora(tmp_path / "loras" / "style.safetensors", random_factors(shapes, block_targets(shapes), 4))
    monkeypatch.setattr(engine, "loras", LoraRegistry(style.parent))
    model = ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    model += ["--text-encoder", str(kit.text_encoder), "--dtype", "float32", "--device", "cpu"]
    base = {"num_frames": 25, "seed": 3}
    jobs = {  # wire fields -> the same request's flags
        "lora": ({"loras": [{"name": "style", "scale": 0.8}]}, ["--lora", f"{style}:0.8"]),
        "plain": ({}, []),
        "cache": ({"cache": "static:1,2,2"}, ["--cache", "static:1,2,2"]),
        "windows": ({"temporal_tile_frames": 16, "temporal_overlap_frames": 8}, ["--temporal-tile-frames", "16"]),
    }
    jobs["windows"][1].extend(["--temporal-overlap-frames", "8"])
    served = {}
    with live_server(tmp_path / "store", token=TOKEN, models=(DEMO_MODEL,), loras=engine.loras) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=TOKEN, max_retries=0)
        with thread_workers(live, 1, engine=engine):
            for name, (fields, _) in jobs.items():
                v = client.videos.create_and_poll(
                    prompt="a kite", size="96x64", extra_body={**base, **fields}, poll_interval_ms=50
                )
                assert v.status == "completed", (name, v.error)
                served[name] = client.videos.download_content(v.id).read()
        bad = live.client().post("/v1/videos", json={"prompt": "p", "loras": [{"name": "nope"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "loras"
        assert "unknown LoRA 'nope'; the server offers: style" in bad.json()["error"]["message"]
    request = ["--prompt", "a kite", "--width", "96", "--height", "64", "--num-frames", "25", "--seed", "3"]
    for name, (_, flags) in jobs.items():
        out = tmp_path / f"{name}.mp4"
        assert cli.main(["generate", *request, *model, *flags, "--out", str(out)]) == 0
        assert served[name] == out.read_bytes(), name
    assert len(set(served.values())) == len(served)  # each field changed the video


def test_a_server_without_a_lora_folder_refuses_loras_by_name(tmp_path: Path) -> None:
    with live_server(tmp_path / "store", token=TOKEN) as live:
        r = live.client().post("/v1/videos", json={"prompt": "p", "loras": [{"name": "style", "scale": 1}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "loras"
        assert "started without --lora-dir" in r.json()["error"]["message"]
        r = live.client().post("/v1/videos", json={"prompt": "p", "cache": "fbc:-1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "cache", r.json()
        r = live.client().post("/v1/videos", json={"prompt": "p", "window_prompts": "a | b"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "window_prompts", r.json()


def test_the_worker_command_serve_builds_is_one_the_worker_parser_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``ltxv serve`` hands its workers parses as ``ltxv worker``, from the namespace ``ltxv.cli.main`` really
    makes (which also carries ``argv``, for the ranks of ``generate --parallel``; passed on, it broke every worker)."""
    from ltxv.serve import cli as serve_cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_cli, "cmd_serve", lambda a: seen.setdefault("argv", serve_cli.worker_argv(a)))
    argv = ["serve", "--store", "/tmp/s", "--port", "1", "--hybrid", "b=/m/b.safetensors", "--hybrid", "c=/m/c"]
    assert cli.main([*argv, "--lora-dir", "L"]) == 0
    worker = cli.build_parser().parse_args(["worker", *seen["argv"]])
    assert (worker.store, worker.hybrid, worker.lora_dir) == ("/tmp/s", ["b=/m/b.safetensors", "c=/m/c"], "L")
    assert "--argv" not in seen["argv"] and "--port" not in seen["argv"]
