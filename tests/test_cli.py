"""The ``ltxv`` command: the reference CLI's flags and defaults (read from the reference's own source), its validation
and output naming, the padding warning, clean one-line errors with no output; then, once the library is in place,
every mode end to end on the tiny model with the mp4 read back."""

from __future__ import annotations

import ast
import importlib.util
import os
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxv import cli
from ltxv.pipelines.presets import PRESETS
from ltxv.pipelines.request import DEFAULT_NEGATIVE_PROMPT, ConditioningMedia, GenerationRequest
from ltxv.weights.errors import LoadError

# --- the reference CLI, read from its source (importing it needs torchvision, which is not a test dependency) --------


def _reference_tree() -> ast.Module:
    spec = importlib.util.find_spec("ltx_video")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the reference ltx_video package is not installed")
    return ast.parse((Path(next(iter(spec.submodule_search_locations))) / "inference.py").read_text())


def _reference_defaults() -> dict[str, Any]:
    """InferenceConfig's fields and their literal defaults (None where there is none or it is computed)."""
    cls = next(n for n in _reference_tree().body if isinstance(n, ast.ClassDef) and n.name == "InferenceConfig")
    out: dict[str, Any] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Call):
            kw = {k.arg: k.value for k in node.value.keywords}
            out[node.target.id] = ast.literal_eval(kw["default"]) if "default" in kw else None
    return out


def _reference_unique_filename() -> Any:
    names = ("convert_prompt_to_filename", "get_unique_filename")
    nodes = [n for n in _reference_tree().body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace: dict[str, Any] = {"os": os, "Path": Path}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "ltx_video/inference.py", "exec"), namespace)
    return namespace["get_unique_filename"]


# A value for every reference flag, unlike its default.
_SAMPLES = {
    "prompt": ["p"],
    "output_path": ["o"],
    "pipeline_config": ["c.yaml"],
    "seed": ["5"],
    "height": ["64"],
    "width": ["96"],
    "num_frames": ["9"],
    "frame_rate": ["24"],
    "offload_to_cpu": [],
    "negative_prompt": ["n"],
    "input_media_path": ["m.mp4"],
    "image_cond_noise_scale": ["0.5"],
    "conditioning_media_paths": ["a.png", "b.png"],
    "conditioning_strengths": ["0.5"],
    "conditioning_start_frames": ["3"],
}


def test_every_reference_flag_in_both_spellings_with_the_reference_default() -> None:
    ref = _reference_defaults()
    assert set(ref) == set(_SAMPLES)
    parser = cli.build_parser()
    ours = vars(parser.parse_args(["generate", "--prompt", "x"]))
    for name, default in ref.items():
        if name not in ("prompt", "output_path", "pipeline_config"):  # required / computed / a file the reference lacks
            assert ours[name] == default, name
        for spelling in {f"--{name}", f"--{name.replace('_', '-')}"}:
            parsed = vars(parser.parse_args(["generate", "--prompt", "x", spelling, *_SAMPLES[name]]))
            assert parsed[name] != ours[name] and parsed[name] not in (None, False), spelling
            assert {k: v for k, v in parsed.items() if k != name} == {k: v for k, v in ours.items() if k != name}
    assert ours["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT == ref["negative_prompt"]
    assert (ours["height"], ours["width"], ours["num_frames"], ours["frame_rate"], ours["seed"]) == (
        704,
        1216,
        121,
        30,
        171198,
    )
    assert ours["image_cond_noise_scale"] == 0.15


@pytest.mark.parametrize(
    ("prompt", "num_frames"),
    [
        ("A cat, playing the piano!! In 4K; very-detailed.", 121),
        ("Supercalifragilisticexpialidocious words everywhere", 121),
        ("   ", 33),
        ("Ünïcödé façade, naïve café", 1),
        ("a b c d e f g h i j k l m n o p q r s t u v w x y z aa bb cc dd ee", 9),
    ],
)
def test_output_names_match_the_reference(tmp_path: Path, prompt: str, num_frames: int) -> None:
    reference = _reference_unique_filename()
    request = GenerationRequest(prompt, height=480, width=704, num_frames=num_frames, seed=42)
    base, ext = ("image_output_0", ".png") if num_frames == 1 else ("video_output_0", ".mp4")
    expected = reference(base, ext, prompt=prompt, seed=42, resolution=(480, 704, num_frames), dir=tmp_path)
    assert cli.output_file(tmp_path, request) == expected
    expected.write_bytes(b"")  # taken: both move on to _1
    assert cli.output_file(tmp_path, request) == reference(
        base, ext, prompt=prompt, seed=42, resolution=(480, 704, num_frames), dir=tmp_path
    )
    assert cli.output_file(tmp_path, request).name.endswith(f"_1{ext}")


# --- the command against a stand-in library: what reaches the preflight, the loader and the writer ------------------


class FakePipeline:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.requests = kwargs, []

    def generate(self, request: GenerationRequest, *, callback: Any = None, frames: Any = None, **options: Any) -> Any:
        self.requests.append(request)
        self.options = options  # the CLI's one-request options (release=True, video_dtype)
        from ltxv.pipelines.progress import ProgressEvent

        for k, n in enumerate((3, 2)):  # two passes
            for i in range(n):
                callback(ProgressEvent("denoise", i + 1, n, pass_index=k, num_passes=2, t=1.0 - i / n))
        video = torch.zeros(1).expand(request.num_frames, request.height, request.width, 3)  # no memory
        if frames is not None:  # streamed to a writer
            frames(video)
            video = None
        return types.SimpleNamespace(video=video, latents=torch.zeros(1, 16, 1, 1, 1), step_models=())


@pytest.fixture
def fake_library(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The models' preflight, the loader and the writers stood in for; the request, the flags and the output
    checks are the real ones."""
    from ltxv.cli import models
    from ltxv.io import video as video_io
    from ltxv.pipelines.request import padded_size

    log = types.SimpleNamespace(pipelines=[], saved=[], pngs=[], checked=[])

    class FakePreflight:
        def __init__(self, choice: Any) -> None:
            self.choice = choice

        def check(self, request: GenerationRequest, output: Any = None, **kwargs: Any) -> Any:
            log.checked.append((request, output))
            h, w, f = padded_size(request.height, request.width, request.num_frames)
            passes = [
                types.SimpleNamespace(height=h * 2 // 3, width=w * 2 // 3),
                types.SimpleNamespace(height=h, width=w),
            ]
            return types.SimpleNamespace(size=(h, w, f), passes=passes)

    def load(choice: Any, checked: Any) -> FakePipeline:
        kwargs = {**choice.args, "residency": choice.residency, "quantize": choice.quantize, "compile": choice.compile}
        log.pipelines.append(FakePipeline(**kwargs))
        return log.pipelines[-1]

    def save_output(path: Any, video: torch.Tensor, latents: torch.Tensor, **kwargs: Any) -> None:
        log.saved.append((Path(path), video, kwargs))
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # as the real writer does
        Path(path).write_bytes(b"")

    def write_png(path: Any, image: torch.Tensor) -> None:
        log.pngs.append((Path(path), image))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"")

    class Mp4Writer:  # the streaming writer: records what a save_output of the whole video would have
        def __init__(self, path: Any, fps: float) -> None:
            self.path, self.fps, self.blocks = path, fps, []

        def __enter__(self) -> Any:
            return self

        def write(self, frames: torch.Tensor) -> None:
            self.blocks.append(frames)

        def __exit__(self, *exc: Any) -> None:
            if exc[0] is None:
                save_output(self.path, torch.cat(self.blocks), None, fps=self.fps)

    monkeypatch.setattr(models.ModelChoice, "preflight", lambda self: FakePreflight(self))
    monkeypatch.setattr(models.ModelChoice, "load", load)
    monkeypatch.setattr(video_io, "save_output", save_output)
    monkeypatch.setattr(video_io, "write_png", write_png)
    monkeypatch.setattr(video_io, "Mp4Writer", Mp4Writer)
    return log


def _media(tmp_path: Path, *names: str) -> list[str]:
    for n in names:
        (tmp_path / n).write_bytes(b"")
    return [str(tmp_path / n) for n in names]


def test_generate_builds_the_request_and_writes_where_the_reference_would(
    tmp_path: Path, fake_library: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltxv.runtime import capability

    monkeypatch.setattr(capability, "cpu_has_fast_bf16", lambda: False)  # the default dtype is then float32
    a, b = _media(tmp_path, "a.png", "b.mp4")
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "A cat playing piano", "--num_frames", "33", "--height", "480", "--width", "704"]
    argv += ["--conditioning-media-paths", a, b, "--conditioning_start_frames", "0", "16", "--seed", "7"]
    argv += ["--conditioning-strengths", "0.5", "1", "--output-path", str(out), "--preset", "ltxv-13b-0.9.8-dev"]
    argv += ["--device", "cpu", "--image-cond-noise-scale", "0.3", "--frame-rate", "24", "--negative_prompt", "ugly"]
    assert cli.main(argv) == 0
    (pipe,) = fake_library.pipelines
    assert pipe.kwargs == {
        "checkpoint": "ltxv-13b-0.9.8-dev.safetensors",
        "upsampler": "ltxv-spatial-upscaler-0.9.8.safetensors",
        "text_encoder": "PixArt-alpha/PixArt-XL-2-1024-MS",
        "dtype": torch.float32,
        "device": "cpu",
        "residency": "resident",
        "quantize": None,
        "compile": False,
    }
    expected = GenerationRequest(
        "A cat playing piano",
        negative_prompt="ugly",
        height=480,
        width=704,
        num_frames=33,
        frame_rate=24.0,
        seed=7,
        conditioning=(ConditioningMedia(a, 0, 0.5), ConditioningMedia(b, 16, 1.0)),
        image_cond_noise_scale=0.3,
        recipe=PRESETS["ltxv-13b-0.9.8-dev"],
    )
    assert pipe.requests == [expected]
    assert pipe.options == {"release": True}  # one request: each model freed after its last stage (frames stream)
    ((path, video, kwargs),) = fake_library.saved
    assert path == out / "video_output_0_a-cat-playing-piano_7_480x704x33_0.mp4"
    assert fake_library.checked == [(expected, path)]  # the preflight saw the request and the destination
    assert video.shape == (33, 480, 704, 3) and kwargs == {"fps": 24.0}
    captured = capsys.readouterr()
    assert f"wrote {path}" in captured.out
    assert "denoise pass 1/2 (469x320): 100%" in captured.err and "denoise pass 2/2 (704x480)" in captured.err


def test_generate_overrides_and_video_to_video(tmp_path: Path, fake_library: Any) -> None:
    (src,) = _media(tmp_path, "src.mp4")
    config = tmp_path / "mine.yaml"
    config.write_text("pipeline_type: base\nnum_inference_steps: 4\nguidance_scale: 3\nprecision: float32\n")
    argv = ["generate", "--prompt", "p", "--pipeline_config", str(config), "--input_media_path", src]
    argv += ["--denoise-strength", "0.6", "--no-media-preprocess", "--checkpoint", "c.safetensors", "--dtype"]
    argv += ["bfloat16", "--text-encoder", "t5dir", "--upsampler", "u.safetensors", "--out", str(tmp_path / "v.mp4")]
    assert cli.main([*argv, "--device", "cpu", "--offload-to-cpu"]) == 0
    (pipe,) = fake_library.pipelines
    assert pipe.kwargs == {
        "checkpoint": "c.safetensors",
        "upsampler": "u.safetensors",
        "text_encoder": "t5dir",
        "dtype": torch.bfloat16,
        "device": "cpu",
        "residency": "offload-text",
        "quantize": None,
        "compile": False,
    }
    (request,) = pipe.requests
    assert (request.input_media, request.denoise_strength, request.media_preprocess) == (src, 0.6, False)
    assert request.recipe.first_pass.num_inference_steps == 4 and request.recipe.first_pass.guidance_scale == 3.0
    assert request.conditioning == ()
    assert fake_library.saved[0][0] == tmp_path / "v.mp4"


def test_one_frame_and_safetensors_outputs(tmp_path: Path, fake_library: Any) -> None:
    base = ["generate", "--prompt", "still life", "--device", "cpu", "--height", "64", "--width", "96"]
    assert cli.main([*base, "--num-frames", "1", "--output-path", str(tmp_path)]) == 0
    assert fake_library.saved[-1][0] == tmp_path / "image_output_0_still-life_171198_64x96x1_0.png"
    assert cli.main([*base, "--num-frames", "1", "--out", str(tmp_path / "x.png")]) == 0
    assert cli.main([*base, "--num-frames", "9", "--out", str(tmp_path / "deep" / "x.safetensors")]) == 0
    assert fake_library.saved[-1][0] == tmp_path / "deep" / "x.safetensors"
    assert cli.main([*base, "--num-frames", "9", "--out", str(tmp_path / "deep" / "x.safetensors")]) == 2  # exists
    assert cli.main([*base, "--num-frames", "9", "--out", str(tmp_path / "deep" / "x.safetensors"), "--overwrite"]) == 0


def test_padding_warning_names_the_padded_size(
    tmp_path: Path, fake_library: Any, caplog: pytest.LogCaptureFixture
) -> None:
    base = ["generate", "--prompt", "p", "--device", "cpu", "--output-path", str(tmp_path)]
    assert cli.main([*base, "--height", "700", "--width", "1200", "--num-frames", "120"]) == 0
    assert "Padded dimensions: 704x1216x121" in caplog.text
    assert fake_library.pipelines[-1].requests[-1].num_frames == 120  # the request keeps the asked size
    caplog.clear()
    assert cli.main([*base, "--height", "704", "--width", "1216", "--num-frames", "121"]) == 0
    assert "Padded" not in caplog.text


def test_flag_errors_are_one_line_and_exit_2(fake_library: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["generate"],
        ["generate", "--prompt", "p", "--preset", "ltxv-2b-0.9.8-distilled", "--pipeline-config", "x.yaml"],
        ["generate", "--prompt", "p", "--height", "tall"],
        ["generate", "--prompt", "p", "--dtype", "float16"],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ltxv generate: error: ") and "--help" in err, err
    assert fake_library.pipelines == []


def test_help_shows_defaults_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 704)", "(default: 1216)", "(default: 121)", "(default: 30.0)", "(default: 171198)"):
        assert default in text, default
    assert "(default: None)" not in text and "(default: False)" not in text
    import ltxv

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ltxv {ltxv.__version__}"


def test_offline_default_preset_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The real preflight, no network: the default preset's checkpoint is neither cached nor downloadable."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["generate", "--prompt", "p", "--device", "cpu", "--output-path", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltxv: error: ltxv-2b-0.9.8-distilled.safetensors (hub repo Lightricks/LTX-Video) is not ")
    assert err.count("\n") == 1 and "HF_HUB_OFFLINE is set; offline, " in err and "--checkpoint FILE" in err
    assert not (tmp_path / "o").exists()


def test_demo_with_given_weights(tmp_path: Path, fake_library: Any) -> None:
    argv = ["demo", "--out-dir", str(tmp_path), "--checkpoint", "ltxv-2b-0.9.8-distilled", "--device", "cpu"]
    assert cli.main(argv) == 0
    (pipe,) = fake_library.pipelines
    assert pipe.kwargs["checkpoint"] == "ltxv-2b-0.9.8-distilled"
    assert pipe.kwargs["upsampler"] == "ltxv-spatial-upscaler-0.9.8.safetensors"
    t2v, i2v = pipe.requests
    assert (t2v.height, t2v.width, t2v.num_frames, t2v.conditioning) == (480, 704, 97, ())
    ((png, image),) = fake_library.pngs
    assert i2v == replace(t2v, prompt=i2v.prompt, conditioning=(ConditioningMedia(str(png)),))
    assert image.shape == (480, 704, 3) and image.min() == 0 and image.max() == 1
    assert [p for p, _, _ in fake_library.saved] == [tmp_path / "t2v.mp4", tmp_path / "i2v.mp4"]


def test_demo_offline_runs_the_shipped_model(tmp_path: Path, fake_library: Any) -> None:
    from ltxv.pipelines.presets import DEMO_PRESET, NATIVE_SIZES
    from ltxv.testing import scenes

    assert cli.main(["demo", "--out-dir", str(tmp_path), "--device", "cpu"]) == 0
    (pipe,) = fake_library.pipelines
    demo = PRESETS[DEMO_PRESET]
    assert (pipe.kwargs["checkpoint"], pipe.kwargs["upsampler"]) == (
        demo.checkpoint_path,
        demo.spatial_upscaler_model_path,
    )
    assert str(pipe.kwargs["text_encoder"]) == demo.text_encoder_model_name_or_path
    t2v, i2v = pipe.requests
    assert (t2v.height, t2v.width, t2v.num_frames) == NATIVE_SIZES[DEMO_PRESET] and t2v.recipe == demo
    assert t2v.prompt == "a red circle moving right" and i2v.prompt == "a cyan square moving left"
    ((_, image),) = fake_library.pngs  # the first frame it draws for image-to-video: what the prompt names
    assert scenes.dominant_colour(image[None]) == "cyan" and scenes.shape_of(image[None]) == "square"


def test_generate_with_the_demo_preset_defaults_to_its_native_size(tmp_path: Path, fake_library: Any) -> None:
    head = ["generate", "--prompt", "a blue square moving up", "--preset", "ltxv-demo", "--device", "cpu"]
    assert cli.main([*head, "--out", str(tmp_path / "a.mp4")]) == 0
    assert cli.main([*head, "--height", "256", "--out", str(tmp_path / "b.mp4")]) == 0  # any size flag: as given
    native, given = (p.requests[0] for p in fake_library.pipelines)
    assert (native.height, native.width, native.num_frames) == (128, 128, 25)
    assert (given.height, given.width, given.num_frames) == (256, 1216, 121)


def test_failed_demo_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The first frame is written, then the run fails: the demo's folder goes with it."""
    from ltxv.cli import models

    def fail(self: Any, checked: Any) -> None:
        raise LoadError("the disk went away")

    monkeypatch.setattr(models.ModelChoice, "load", fail)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out-dir", str(out), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "ltxv: error: the disk went away\n"
    assert list(tmp_path.iterdir()) == []


# --- end to end on the tiny model (needs the generation API, the video writer and the tiny text encoder) ------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("ltxv.pipelines.generate")
    pytest.importorskip("ltxv.io.video")
    pytest.importorskip("ltxv.testing.text")
    from ltxv.testing.checkpoints import CHECKPOINT_NAME, TEXT_ENCODER_DIR, UPSAMPLER_NAME

    folder = tmp_path_factory.mktemp("tiny")
    assert cli.main(["make-tiny", str(folder), "--seed", "3"]) == 0
    return types.SimpleNamespace(
        checkpoint=folder / CHECKPOINT_NAME, upsampler=folder / UPSAMPLER_NAME, text_encoder=folder / TEXT_ENCODER_DIR
    )


def _kit_flags(kit: Any) -> list[str]:
    models = ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    return [*models, "--text-encoder", str(kit.text_encoder), "--device", "cpu", "--dtype", "float32"]


def _read_mp4(path: Path) -> tuple[int, int, int, float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return len(frames), frames[0].height, frames[0].width, float(stream.average_rate)


def _image(path: Path, h: int, w: int) -> str:
    from ltxv.io.video import write_png

    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    write_png(path, torch.stack([x, y, 1 - x], dim=-1))
    return str(path)


@pytest.mark.parametrize("mode", ["t2v", "i2v", "keyframes", "v2v", "unpadded", "base"])
def test_end_to_end_modes_write_playable_mp4(tmp_path: Path, kit: Any, mode: str) -> None:
    h, w, f = (50, 70, 10) if mode == "unpadded" else (64, 96, 17)
    head = ["generate", "--prompt", "a tiny test", "--height", str(h), "--width", str(w), "--num-frames", str(f)]
    head += ["--frame-rate", "24", *_kit_flags(kit)]
    img, extra = _image(tmp_path / "cond.png", 64, 96), []
    if mode == "i2v":
        extra = ["--conditioning-media-paths", img, "--conditioning-start-frames", "0"]
    elif mode == "keyframes":
        extra = ["--conditioning-media-paths", img, img, "--conditioning-start-frames", "0", "16"]
        extra += ["--conditioning-strengths", "1", "0.8"]
    elif mode == "v2v":
        assert cli.main([*head, "--out", str(tmp_path / "src.mp4")]) == 0
        extra = ["--input-media-path", str(tmp_path / "src.mp4"), "--denoise-strength", "0.8"]
    elif mode == "base":
        extra = ["--preset", "ltxv-2b-0.9.6-distilled"]
    assert cli.main([*head, *extra, "--out", str(tmp_path / "out.mp4")]) == 0
    assert _read_mp4(tmp_path / "out.mp4") == (f, h, w, 24.0)


def test_end_to_end_safetensors_equals_the_api(tmp_path: Path, kit: Any) -> None:
    """The same prompt and seed, every other setting the door's default: the same video (the API's request and
    loader default to the CLI's recipe, dtype and device)."""
    from safetensors.torch import load_file

    from ltxv.pipelines.generate import load_pipeline

    out = tmp_path / "out.safetensors"
    argv = ["generate", "--prompt", "a tiny test", "--height", "64", "--width", "96", "--num-frames", "9"]
    models = ["--checkpoint", str(kit.checkpoint), "--upsampler", str(kit.upsampler)]
    assert cli.main([*argv, "--seed", "5", "--out", str(out), *models, "--text-encoder", str(kit.text_encoder)]) == 0
    pipe = load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder)
    request = GenerationRequest("a tiny test", height=64, width=96, num_frames=9, seed=5)
    assert request.recipe == PRESETS[cli.DEFAULT_PRESET]
    result = pipe.generate(request)
    stored = load_file(str(out))
    torch.testing.assert_close(stored["video"], result.video, rtol=0, atol=0)
    torch.testing.assert_close(stored["latents"], result.latents, rtol=0, atol=0)


def test_end_to_end_bad_input_leaves_no_file(tmp_path: Path, kit: Any, capsys: pytest.CaptureFixture[str]) -> None:
    img = _image(tmp_path / "cond.png", 64, 96)
    argv = ["generate", "--prompt", "p", "--height", "64", "--width", "96", "--num-frames", "17"]
    argv += ["--conditioning-media-paths", img, "--conditioning-start-frames", "0", "--conditioning-strengths", "2"]
    assert cli.main([*argv, "--out", str(tmp_path / "x.mp4"), *_kit_flags(kit)]) == 2
    assert "strength must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
