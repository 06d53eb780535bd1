"""LoRAs through the pipeline's front doors: ``load(loras=)``, ``set_loras``, per-pass sets, the YAML key, names."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ltxv.errors import LtxvError
from ltxv.lora import linear_shapes
from ltxv.pipelines.generate import Pipeline, load_pipeline
from ltxv.pipelines.loras import LoraRegistry, parse_lora_arg
from ltxv.pipelines.presets import recipe_from_dict
from ltxv.pipelines.request import GenerationRequest, Lora, PassSettings, Recipe, RequestError
from ltxv.testing.checkpoints import write_tiny_kit
from ltxv.testing.loras import block_targets, random_factors, write_lora

BASE = Recipe(first_pass=PassSettings(num_inference_steps=2))
MULTI = Recipe(
    pipeline_type="multi-scale",
    first_pass=PassSettings(timesteps=(1.0, 0.9)),
    second_pass=PassSettings(timesteps=(0.9, 0.5)),
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory):
    return write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def pipe(kit) -> Pipeline:
    return load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)


@pytest.fixture(scope="module")
def loras(pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    shapes = linear_shapes(pipe.models.transformer)
    names = block_targets(shapes)
    return {
        "a": write_lora(folder / "a.safetensors", random_factors(shapes, names, 4, seed=1)),
        "b": write_lora(folder / "b.safetensors", random_factors(shapes, names[:5], 2, seed=2), "kohya"),
        "zero": write_lora(folder / "zero.safetensors", random_factors(shapes, names, 4, seed=3, zero_up=True)),
    }


def _request(recipe: Recipe = BASE, **kw: object) -> GenerationRequest:
    return GenerationRequest("a red kite", height=64, width=96, num_frames=9, seed=3, recipe=recipe, **kw)


@pytest.fixture(scope="module")
def base_video(pipe: Pipeline) -> torch.Tensor:
    pipe.set_loras([])
    return pipe.generate(_request()).video


def test_a_zero_lora_or_scale_zero_leaves_the_video_bit_identical(pipe, loras, base_video) -> None:
    for chosen in ([(loras["zero"], 1.0)], [(loras["a"], 0.0)], [(loras["zero"], 2.0), (loras["a"], 0.0)]):
        pipe.set_loras(chosen)
        assert torch.equal(pipe.generate(_request()).video, base_video), chosen
    pipe.set_loras([(loras["a"], 1.0)])
    assert (pipe.generate(_request()).video - base_video).abs().max() > 1e-3  # a real LoRA does change it
    pipe.set_loras([])


def test_set_loras_switches_warm_and_empty_restores_the_base_bit_for_bit(pipe, loras, base_video) -> None:
    before = {k: v.clone() for k, v in pipe.models.transformer.state_dict().items()}
    pipe.set_loras([(loras["a"], 0.8), (loras["b"], -0.5)])
    two = pipe.generate(_request()).video
    pipe.set_loras([Lora(loras["b"], 1.0)])
    pipe.set_loras([(loras["a"], 0.8), (loras["b"], -0.5)])
    assert torch.equal(pipe.generate(_request()).video, two)
    pipe.set_loras([])
    assert all(torch.equal(pipe.models.transformer.state_dict()[k], v) for k, v in before.items())
    assert torch.equal(pipe.generate(_request()).video, base_video)


def test_load_with_loras_equals_setting_them_later(kit, pipe, loras) -> None:
    pipe.set_loras([(loras["a"], 0.6)])
    later = pipe.generate(_request()).video
    pipe.set_loras([])
    loaded = load_pipeline(
        kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32, loras=[(loras["a"], 0.6)]
    )
    assert torch.equal(loaded.generate(_request()).video, later)


def test_a_bad_lora_fails_before_the_checkpoint_is_read(kit, tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"transformer.transformer_blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 128)}, str(bad))
    import ltxv.pipelines.generate as generate

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr(generate, "load_models", never)
    with pytest.raises(LtxvError, match=r"transformer_blocks\.9\.attn1\.to_q") as e:
        load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32, loras=[(bad, 1.0)])
    assert e.value.param == "loras[0]"


def test_a_request_with_its_own_set_uses_it_and_the_next_gets_the_pipelines(pipe, loras, base_video) -> None:
    pipe.set_loras([(loras["a"], 1.0)])
    with_a = pipe.generate(_request()).video
    pipe.set_loras([])
    assert torch.equal(pipe.generate(_request(BASE.with_loras([Lora(loras["a"])]))).video, with_a)
    assert torch.equal(pipe.generate(_request()).video, base_video)  # loras=None: the pipeline's set (none)
    pipe.set_loras([(loras["a"], 1.0)])
    assert torch.equal(pipe.generate(_request(BASE.with_loras([]))).video, base_video)  # () = no LoRA
    pipe.set_loras([])


def test_each_pass_runs_with_its_own_set(pipe, loras) -> None:
    """Multi-scale: pass 1 without LoRA, pass 2 with a detailer-style set of its own."""
    recipe = replace(MULTI, second_pass=replace(MULTI.second_pass, loras=(Lora(loras["b"], 1.5),)))
    seen: dict[int, tuple] = {}

    def record(e) -> None:
        if e.stage == "denoise":
            seen[e.pass_index] = pipe.lora.active

    pipe.set_loras([])
    pipe.generate(_request(recipe), callback=record)
    assert seen == {0: (), 1: ((loras["b"].resolve(), 1.5),)}


def test_yaml_loras_are_shared_or_per_pass() -> None:
    cfg = {
        "pipeline_type": "multi-scale",
        "loras": ["style.safetensors:0.7"],
        "first_pass": {"timesteps": [1.0, 0.9]},
        "second_pass": {"timesteps": [0.9, 0.5], "loras": [{"path": "detailer.safetensors", "scale": 1.5}]},
    }
    r = recipe_from_dict(cfg)
    assert r.first_pass.loras == (Lora("style.safetensors", 0.7),)
    assert r.second_pass.loras == (Lora("detailer.safetensors", 1.5),)
    assert recipe_from_dict({"pipeline_type": "base"}).first_pass.loras is None
    assert recipe_from_dict({"loras": []}).first_pass.loras == ()
    for bad, needle in (
        ({"loras": "a.safetensors"}, "expected a list"),
        ({"loras": [{"file": "a"}]}, "loras[0]"),
        ({"loras": [{"path": "a", "scale": "x"}]}, "finite number"),
    ):
        with pytest.raises(RequestError, match=re.escape(needle)):
            recipe_from_dict(bad)


def test_lora_args() -> None:
    assert parse_lora_arg("a.safetensors") == Lora("a.safetensors", 1.0)
    assert parse_lora_arg("dir/a.safetensors:0.25") == Lora("dir/a.safetensors", 0.25)
    assert parse_lora_arg("C:/x/a.safetensors:-1") == Lora("C:/x/a.safetensors", -1.0)
    assert parse_lora_arg("odd:name.safetensors") == Lora("odd:name.safetensors", 1.0)
    with pytest.raises(RequestError, match="finite"):
        _request(BASE.with_loras([parse_lora_arg("a.safetensors:nan")])).validate()


def test_registry_names_files_and_refuses_paths(tmp_path: Path, loras) -> None:
    folder = tmp_path / "loras"
    (folder / "control").mkdir(parents=True)
    (folder / "style.safetensors").write_bytes(loras["a"].read_bytes())
    (folder / "control" / "depth.safetensors").write_bytes(loras["b"].read_bytes())
    (folder / "notes.txt").write_text("not a LoRA")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(loras["a"].read_bytes())
    (folder / "link.safetensors").symlink_to(outside)
    reg = LoraRegistry(folder)
    assert reg.names() == ["control/depth", "style"]
    assert reg.resolve("style") == folder.resolve() / "style.safetensors"
    got = reg.loras([{"name": "control/depth", "scale": 0.5}, {"name": "style"}])
    assert got == (
        Lora(folder.resolve() / "control/depth.safetensors", 0.5),
        Lora(folder.resolve() / "style.safetensors"),
    )
    for name in (
        "../secret",
        str(outside),
        "/etc/passwd",
        "style.safetensors",
        "link",
        "notes",
        "a\\b",
        "",
        3,
        ".hidden",
    ):
        with pytest.raises(RequestError):
            reg.resolve(name)
    with pytest.raises(RequestError, match="the server offers: control/depth, style"):
        reg.resolve("nope")
    for bad in ("style", [{"name": "style", "scale": "x"}], [{"path": "/etc/passwd"}], [{"name": "style", "x": 1}]):
        with pytest.raises(RequestError):
            reg.loras(bad)
    (folder / "new.safetensors").write_bytes(loras["a"].read_bytes())
    assert reg.resolve("new") == folder.resolve() / "new.safetensors"  # added while running: found


def test_control_video_without_a_lora_warns(pipe, caplog) -> None:
    from ltxv.pipelines.request import ControlVideo

    pipe.set_loras([])
    control = torch.zeros(3, 9, 64, 96)
    with caplog.at_level(logging.WARNING, logger="ltxv"):
        pipe.generate(_request(conditioning=(ControlVideo(control),)))
    assert any("control video but no LoRA" in r.message for r in caplog.records)


def test_cli_flags_build_per_pass_sets_and_controls() -> None:
    from ltxv.pipelines.loras import with_lora_flags
    from ltxv.pipelines.request import ControlVideo

    style, ic, detail = Lora("style.safetensors", 0.7), Lora("depth.safetensors"), Lora("detailer.safetensors", 1.5)
    r = with_lora_flags(
        _request(MULTI), loras=[style], control_video="depth.mp4", control_loras=[ic], detailer_loras=[detail]
    )
    assert r.recipe.first_pass.loras == (style, ic)
    assert r.recipe.second_pass.loras == (style, detail)
    assert r.conditioning == (ControlVideo("depth.mp4"), ControlVideo(None, passes=(1,)))
    r.validate()
    plain = with_lora_flags(_request(MULTI))
    assert plain == _request(MULTI)  # no flags: the config's sets (here none: the pipeline's)
    with pytest.raises(RequestError, match="starts from latents"):
        with_lora_flags(_request(BASE), detailer_loras=[detail])
    with pytest.raises(RequestError, match="--control-video"):
        with_lora_flags(_request(BASE), control_preprocess="canny")


def test_fp8_pipeline_merges_and_restores_bit_for_bit(kit, loras) -> None:
    fp8 = load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32, quantize="fp8")
    base = fp8.generate(_request()).video
    fp8.set_loras([(loras["a"], 1.0)])
    merged = fp8.generate(_request()).video
    assert (merged - base).abs().max() > 1e-3
    fp8.set_loras([])
    assert torch.equal(fp8.generate(_request()).video, base)
