"""Recipes: the reference's 11 YAML pipeline configs parse to what the reference runs, the presets equal the 0.9.8 /
0.9.6 configs, anything the reference would not read is a clear error; and hub resolution never touches the network
when the cache has the file and fails fast, naming the file, when neither cache nor network has it."""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ltxv.pipelines import presets
from ltxv.pipelines.presets import (
    DEMO_PRESET,
    PRESETS,
    get_preset,
    load_recipe,
    pipeline_args,
    recipe_from_dict,
    recipe_from_yaml,
)
from ltxv.pipelines.request import PassSettings, Recipe, RequestError
from ltxv.weights import hub
from ltxv.weights.errors import LoadError

# --- the reference configs, transcribed (configs/*.yaml of Lightricks/LTX-Video at 5260738) ------------------------

_HEAD = """stg_mode: "attention_values" # options: "attention_values", "attention_skip", "residual", "transformer_block"
decode_timestep: 0.05
decode_noise_scale: 0.025
text_encoder_model_name_or_path: "PixArt-alpha/PixArt-XL-2-1024-MS"
precision: "{precision}"
sampler: "from_checkpoint" # options: "uniform", "linear-quadratic", "from_checkpoint"
prompt_enhancement_words_threshold: 120
prompt_enhancer_image_caption_model_name_or_path: "MiaoshouAI/Florence-2-large-PromptGen-v2.0"
prompt_enhancer_llm_model_name_or_path: "unsloth/Llama-3.2-3B-Instruct"
stochastic_sampling: {stochastic}
"""
_MULTI = """pipeline_type: multi-scale
checkpoint_path: "{ckpt}.safetensors"
downscale_factor: 0.6666666
spatial_upscaler_model_path: "ltxv-spatial-upscaler-0.9.8.safetensors"
"""
_DISTILLED = """
first_pass:
  timesteps: [1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250]
  guidance_scale: 1
  stg_scale: 0
  rescaling_scale: 1
  skip_block_list: [42]

second_pass:
  timesteps: [0.9094, 0.7250, 0.4219]
  guidance_scale: 1
  stg_scale: 0
  rescaling_scale: 1
  skip_block_list: [42]
"""
_DEV = """
first_pass:
  guidance_scale: [1, 1, 6, 8, 6, 1, 1]
  stg_scale: [0, 0, 4, 4, 4, 2, 1]
  rescaling_scale: [1, 1, 0.5, 0.5, 1, 1, 1]
  guidance_timesteps: [1.0, 0.996,  0.9933, 0.9850, 0.9767, 0.9008, 0.6180]
  skip_block_list: [[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]]
  num_inference_steps: 30
  skip_final_inference_steps: 3
  cfg_star_rescale: true

second_pass:
  guidance_scale: [1]
  stg_scale: [1]
  rescaling_scale: [1]
  guidance_timesteps: [1.0]
  skip_block_list: [27]
  num_inference_steps: 30
  skip_initial_inference_steps: 17
  cfg_star_rescale: true"""
_BASE = """pipeline_type: base
checkpoint_path: "{ckpt}.safetensors"
guidance_scale: {cfg}
stg_scale: {stg}
rescaling_scale: {rescale}
{blocks}num_inference_steps: {steps}
"""
_BASE_DEV = {"cfg": 3, "stg": 1, "rescale": 0.7, "blocks": "skip_block_list: [19]\n", "steps": 40}


def _multi(ckpt: str, body: str, precision: str = "bfloat16") -> str:
    return _MULTI.format(ckpt=ckpt) + _HEAD.format(precision=precision, stochastic="false") + body


def _base(ckpt: str, stochastic: str = "false", **kw: Any) -> str:
    return (
        _BASE.format(ckpt=ckpt, **{**_BASE_DEV, **kw}).rstrip("\n")
        + "\n"
        + _HEAD.format(precision="bfloat16", stochastic=stochastic).rstrip("\n")
    )


_TONE_MAP = "  tone_map_compression_ratio: 0.6\n"
REFERENCE_CONFIGS = {
    "ltxv-13b-0.9.8-dev": _multi("ltxv-13b-0.9.8-dev", _DEV),
    "ltxv-13b-0.9.8-dev-fp8": _multi("ltxv-13b-0.9.8-dev-fp8", _DEV, "float8_e4m3fn"),
    "ltxv-13b-0.9.8-distilled": _multi("ltxv-13b-0.9.8-distilled", _DISTILLED + _TONE_MAP),
    "ltxv-13b-0.9.8-distilled-fp8": _multi("ltxv-13b-0.9.8-distilled-fp8", _DISTILLED + _TONE_MAP, "float8_e4m3fn"),
    "ltxv-2b-0.9.8-distilled": _multi("ltxv-2b-0.9.8-distilled", _DISTILLED),
    "ltxv-2b-0.9.8-distilled-fp8": _multi("ltxv-2b-0.9.8-distilled-fp8", _DISTILLED, "float8_e4m3fn"),
    "ltxv-2b-0.9.6-dev": _base("ltxv-2b-0.9.6-dev-04-25"),
    "ltxv-2b-0.9.6-distilled": _base(
        "ltxv-2b-0.9.6-distilled-04-25", "true", cfg=1, stg=0, rescale=1, blocks="", steps=8
    ),
    "ltxv-2b-0.9.5": _base("ltx-video-2b-v0.9.5"),
    "ltxv-2b-0.9.1": _base("ltx-video-2b-v0.9.1"),
    "ltxv-2b-0.9": _base("ltx-video-2b-v0.9"),
}
MIRROR = Path("/work/.mirror/Lightricks+LTX-Video/repo")


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.skipif(not MIRROR.is_dir(), reason="no local clone of the reference repository")
@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_transcription_matches_the_reference_files(name: str) -> None:
    real = subprocess.run(
        ["git", "-C", str(MIRROR), "show", f"HEAD:configs/{name}.yaml"], capture_output=True, text=True, check=True
    ).stdout
    assert yaml.safe_load(REFERENCE_CONFIGS[name]) == yaml.safe_load(real)


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_every_reference_config_parses(tmp_path: Path, name: str) -> None:
    recipe = recipe_from_yaml(_write(tmp_path, REFERENCE_CONFIGS[name]))
    assert recipe.prompt_enhancement_words_threshold == 120
    assert (recipe.decode_timestep, recipe.decode_noise_scale) == (0.05, 0.025)
    assert recipe.text_encoder_model_name_or_path == "PixArt-alpha/PixArt-XL-2-1024-MS"
    assert recipe.stg_mode == "attention_values" and recipe.sampler == "from_checkpoint"
    if name in PRESETS:  # the presets are these files, minus prompt enhancement (not implemented)
        assert replace(recipe, prompt_enhancement_words_threshold=0) == PRESETS[name]
    else:  # 0.9 / 0.9.1 / 0.9.5: the base 2B dev recipe
        assert recipe.first_pass == PRESETS["ltxv-2b-0.9.6-dev"].first_pass
        assert recipe.checkpoint_path == f"ltx-video-2b-v{name.removeprefix('ltxv-2b-')}.safetensors"


def test_presets_hold_the_released_numbers() -> None:
    assert set(PRESETS) == {
        *(
            f"ltxv-{m}-0.9.8-{v}{q}"
            for m, v in (("2b", "distilled"), ("13b", "distilled"), ("13b", "dev"))
            for q in ("", "-fp8")
        ),
        "ltxv-2b-0.9.6-distilled",
        "ltxv-2b-0.9.6-dev",
        "ltxv-demo",  # the shipped demo model (training/train_demo.py)
    }
    dev = PRESETS["ltxv-13b-0.9.8-dev"]
    assert dev.pipeline_type == "multi-scale" and dev.downscale_factor == 0.6666666
    assert dev.first_pass.guidance_scale == (1, 1, 6, 8, 6, 1, 1)
    assert dev.first_pass.stg_scale == (0, 0, 4, 4, 4, 2, 1)
    assert dev.first_pass.rescaling_scale == (1, 1, 0.5, 0.5, 1, 1, 1)
    assert dev.first_pass.guidance_timesteps == (1.0, 0.996, 0.9933, 0.985, 0.9767, 0.9008, 0.618)
    assert dev.first_pass.skip_block_list == ((), (11, 25, 35, 39), (22, 35, 39), (28,), (28,), (28,), (28,))
    assert (dev.first_pass.num_inference_steps, dev.first_pass.skip_final_inference_steps) == (30, 3)
    assert dev.second_pass is not None
    assert (dev.second_pass.skip_initial_inference_steps, dev.second_pass.skip_block_list) == (17, (27,))
    assert dev.first_pass.cfg_star_rescale and dev.second_pass.cfg_star_rescale
    for size, tone in (("2b", 0.0), ("13b", 0.6)):
        r = PRESETS[f"ltxv-{size}-0.9.8-distilled"]
        assert r.first_pass.timesteps == (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725)
        assert r.second_pass is not None and r.second_pass.timesteps == (0.9094, 0.725, 0.4219)
        assert r.second_pass.tone_map_compression_ratio == tone and r.first_pass.tone_map_compression_ratio == 0.0
        assert r.spatial_upscaler_model_path == "ltxv-spatial-upscaler-0.9.8.safetensors"
        fp8 = PRESETS[f"ltxv-{size}-0.9.8-distilled-fp8"]
        assert fp8 == replace(
            r, precision="float8_e4m3fn", checkpoint_path=f"ltxv-{size}-0.9.8-distilled-fp8.safetensors"
        )
    distilled_096 = PRESETS["ltxv-2b-0.9.6-distilled"]
    assert distilled_096.pipeline_type == "base" and distilled_096.second_pass is None
    assert distilled_096.first_pass.stochastic_sampling and distilled_096.first_pass.num_inference_steps == 8
    for r in PRESETS.values():
        r.validate()
        assert r.prompt_enhancement_words_threshold == 0


def test_missing_sampling_keys_take_the_reference_call_defaults() -> None:
    r = recipe_from_dict({})
    assert r.first_pass == PassSettings(num_inference_steps=20, guidance_scale=4.5, stg_scale=1.0, rescaling_scale=0.7)
    assert (r.pipeline_type, r.precision, r.sampler, r.stg_mode) == (
        "base",
        "float32",
        "from_checkpoint",
        "attention_values",
    )
    assert (r.decode_timestep, r.decode_noise_scale, r.checkpoint_path, r.second_pass) == (0.0, None, None, None)


def test_pass_defaults_are_the_reference_pipeline_call_defaults() -> None:
    """Read from the reference's own ``LTXVideoPipeline.__call__`` signature."""
    spec = importlib.util.find_spec("ltx_video")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the reference ltx_video package is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "pipelines" / "pipeline_ltx_video.py"
    cls = next(
        n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef) and n.name == "LTXVideoPipeline"
    )
    call = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__call__")
    args = call.args.args[len(call.args.args) - len(call.args.defaults) :]
    reference = {a.arg: ast.literal_eval(d) for a, d in zip(args, call.args.defaults)}
    parsed = recipe_from_dict({})
    for key in presets._PASS_KEYS - presets.LTXV_PASS_KEYS:
        assert getattr(parsed.first_pass, key) == reference[key], key
    assert (parsed.decode_timestep, parsed.decode_noise_scale) == (
        reference["decode_timestep"],
        reference["decode_noise_scale"],
    )


def test_top_level_sampling_keys_reach_both_passes_and_pass_dicts_override() -> None:
    r = recipe_from_dict(
        {
            "pipeline_type": "multi-scale",
            "stochastic_sampling": True,
            "stg_scale": 0,
            "first_pass": {"num_inference_steps": 7},
            "second_pass": {"stochastic_sampling": False, "tone_map_compression_ratio": 0.6},
        }
    )
    assert r.second_pass is not None
    assert r.first_pass == PassSettings(
        num_inference_steps=7, guidance_scale=4.5, stg_scale=0.0, rescaling_scale=0.7, stochastic_sampling=True
    )
    assert r.second_pass == PassSettings(
        num_inference_steps=20, guidance_scale=4.5, stg_scale=0.0, rescaling_scale=0.7, tone_map_compression_ratio=0.6
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("stg_av", "attention_values"),
        ("stg_as", "attention_skip"),
        ("stg_r", "residual"),
        ("stg_t", "transformer_block"),
        ("STG_T", "transformer_block"),
        ("Attention_Skip", "attention_skip"),
        ("residual", "residual"),
    ],
)
def test_stg_modes_and_aliases(given: str, expected: str) -> None:
    assert recipe_from_dict({"stg_mode": given}).stg_mode == expected


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("precision", "float32", "float32"),
        ("precision", "mixed_precision", "mixed_precision"),
        ("precision", "float8_e4m3fn", "float8_e4m3fn"),
        ("sampler", "uniform", "uniform"),
        ("sampler", "Uniform", "uniform"),
        ("sampler", "LinearQuadratic", "linear-quadratic"),
        ("sampler", "linear-quadratic", "linear-quadratic"),
        ("sampler", None, "from_checkpoint"),
    ],
)
def test_precision_and_sampler_values(key: str, given: str | None, expected: str) -> None:
    assert getattr(recipe_from_dict({key: given}), key) == expected


def test_lists_become_tuples() -> None:
    r = recipe_from_dict(
        {
            "guidance_timesteps": [1.0, 0.5],
            "guidance_scale": [3, 1],
            "skip_block_list": [[1, 2], []],
            "timesteps": [1, 0.5],
        }
    )
    assert r.first_pass.guidance_scale == (3.0, 1.0) and isinstance(r.first_pass.guidance_scale, tuple)
    assert r.first_pass.skip_block_list == ((1, 2), ())
    assert r.first_pass.timesteps == (1.0, 0.5) and r.first_pass.guidance_timesteps == (1.0, 0.5)
    assert recipe_from_dict({"skip_block_list": []}).first_pass.skip_block_list == ()
    assert recipe_from_dict({"skip_block_list": None}).first_pass.skip_block_list is None


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"guidance_sclae": 3, "frobnicate": 1}, "unknown pipeline config key(s): frobnicate, guidance_sclae"),
        (
            {"pipeline_type": "multi-scale", "first_pass": {"cfg": 1}, "second_pass": {}},
            "unknown pipeline config key(s) in first_pass: cfg",
        ),
        (
            {"pipeline_type": "multi-scale", "first_pass": {}, "second_pass": {"decode_timestep": 0.05}},
            "decode_timestep",
        ),
        ({"pipeline_type": "multi-scale", "first_pass": {}}, "needs second_pass"),
        ({"pipeline_type": "base", "first_pass": {}}, "first_pass/second_pass are for multi-scale"),
        ({"pipeline_type": "cascade"}, "pipeline_type must be"),
        ({"stg_mode": "stg_x"}, "stg_mode must be one of"),
        ({"precision": "float16"}, "precision: expected one of"),
        ({"sampler": "euler"}, "sampler: expected one of"),
        ({"guidance_scale": "high"}, "guidance_scale: expected a number"),
        ({"guidance_scale": True}, "guidance_scale: expected a number"),
        ({"num_inference_steps": 2.5}, "num_inference_steps: expected an integer"),
        ({"cfg_star_rescale": "yes"}, "cfg_star_rescale: expected true or false"),
        ({"skip_block_list": [[1], 2]}, "mixes block indices"),
        ({"skip_block_list": [1.5]}, "skip_block_list: expected an integer"),
        ({"guidance_scale": [1, 3]}, "need guidance_timesteps"),
        ({"guidance_scale": [1, 3], "guidance_timesteps": [1.0]}, "has 2 entries but guidance_timesteps has 1"),
        (
            {"pipeline_type": "multi-scale", "first_pass": {"timesteps": [1.5]}, "second_pass": {}},
            "timesteps must be a non-empty list in (0, 1]",
        ),
        ({"checkpoint_path": 3}, "checkpoint_path: expected a string"),
        ({"prompt_enhancement_words_threshold": "many"}, "prompt_enhancement_words_threshold: expected an integer"),
    ],
)
def test_bad_configs_are_clear_errors(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)):
        recipe_from_dict(cfg)


def test_prompt_enhancement_threshold_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ltxv"):
        assert recipe_from_dict({"prompt_enhancement_words_threshold": 120}).prompt_enhancement_words_threshold == 120
    assert "prompt_enhancement_words_threshold=120 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ltxv"):
        recipe_from_dict({"prompt_enhancement_words_threshold": 0})
    assert caplog.text == ""


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"cannot read pipeline config .*nope.yaml"):
        recipe_from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(RequestError, match=r"bad.yaml is not valid YAML"):
        recipe_from_yaml(_write(tmp_path, "first_pass: [1,\n", "bad.yaml"))
    with pytest.raises(RequestError, match=r"list.yaml: a pipeline config must be a mapping"):
        recipe_from_yaml(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(RequestError, match=r"typo.yaml: unknown pipeline config key"):
        recipe_from_yaml(_write(tmp_path, "num_inferense_steps: 8\n", "typo.yaml"))


def test_get_preset_and_load_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_preset("ltxv-13b-0.9.8-dev") is PRESETS["ltxv-13b-0.9.8-dev"]
    with pytest.raises(RequestError, match=r"unknown preset 'ltxv-7b'; known presets: ltxv-2b-0.9.8-distilled, "):
        get_preset("ltxv-7b")
    assert load_recipe("ltxv-2b-0.9.6-dev") is PRESETS["ltxv-2b-0.9.6-dev"]
    own = _write(tmp_path, "pipeline_type: base\nnum_inference_steps: 3\n", "ltxv-2b-0.9.6-dev.yaml")
    assert load_recipe(own).first_pass.num_inference_steps == 3  # an existing file wins over the preset name
    monkeypatch.chdir(tmp_path)
    # The reference CLI's spelling of a config that is not here: the built-in preset of that name.
    assert load_recipe("configs/ltxv-13b-0.9.8-distilled.yaml") is PRESETS["ltxv-13b-0.9.8-distilled"]
    with pytest.raises(RequestError, match=r"configs/ltxv-13b-0.9.7-dev.yaml is neither a pipeline config file nor"):
        load_recipe("configs/ltxv-13b-0.9.7-dev.yaml")


def test_pipeline_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from ltxv.runtime import capability

    monkeypatch.setattr(capability, "cpu_has_fast_bf16", lambda: False)
    dev = PRESETS["ltxv-13b-0.9.8-dev"]
    args = pipeline_args(dev, device="cpu")
    assert args == {
        "checkpoint": "ltxv-13b-0.9.8-dev.safetensors",
        "upsampler": "ltxv-spatial-upscaler-0.9.8.safetensors",
        "text_encoder": "PixArt-alpha/PixArt-XL-2-1024-MS",
        "dtype": torch.float32,  # bfloat16 recipes run in float32 on a CPU without native bf16
        "device": "cpu",
    }
    assert pipeline_args(dev, device="cuda")["dtype"] == torch.bfloat16
    assert pipeline_args(replace(dev, precision="float32"), device="cuda:1")["dtype"] == torch.float32
    assert pipeline_args(dev, device="cuda", dtype="float32")["dtype"] == torch.float32
    over = pipeline_args(dev, checkpoint="a.safetensors", upsampler="b.safetensors", text_encoder="t5", device="cpu")
    assert (over["checkpoint"], over["upsampler"], over["text_encoder"]) == ("a.safetensors", "b.safetensors", "t5")
    assert pipeline_args(PRESETS["ltxv-2b-0.9.6-dev"], device="cpu")["upsampler"] is None  # base: no upsampler
    with pytest.raises(RequestError, match=r"no checkpoint"):
        pipeline_args(Recipe(), device="cpu")
    with pytest.raises(RequestError, match=r"dtype must be float32 or bfloat16"):
        pipeline_args(dev, device="cpu", dtype="float16")
    monkeypatch.setattr(capability, "cpu_has_fast_bf16", lambda: True)  # AVX512-BF16 / AMX: bf16 is the faster one
    assert pipeline_args(dev, device="cpu")["dtype"] == torch.bfloat16
    assert pipeline_args(replace(dev, precision="float32"), device="cpu")["dtype"] == torch.float32


def test_every_pass_setting_has_a_parser() -> None:
    assert set(presets._PASS_PARSERS) == presets._PASS_KEYS


# --- hub resolution --------------------------------------------------------------------------------------------------


class FakeHub:
    """Stands in for huggingface_hub: a cache (names -> paths) and a network that may be down."""

    def __init__(self, cached: dict[str, str], online: dict[str, str] | None = None, error: Exception | None = None):
        self.cached, self.online, self.error = cached, online or {}, error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _get(self, key: str, kw: dict[str, Any]) -> str:
        self.calls.append((key, kw))
        if kw.get("local_files_only"):
            if key in self.cached:
                return self.cached[key]
            raise FileNotFoundError(f"{key} not cached")  # LocalEntryNotFoundError is a FileNotFoundError
        if self.error is not None:
            raise self.error
        return self.online[key]

    def hf_hub_download(self, repo_id: str, filename: str, **kw: Any) -> str:
        return self._get(f"{repo_id}:{filename}", kw)

    def snapshot_download(self, repo_id: str, **kw: Any) -> str:
        return self._get(repo_id, kw)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(fake: FakeHub, reachable: bool = True) -> FakeHub:
        monkeypatch.setattr(hub, "hf_hub_download", fake.hf_hub_download)
        monkeypatch.setattr(hub, "snapshot_download", fake.snapshot_download)
        monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: reachable)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        return fake

    return install


def test_local_paths_are_returned_as_is(tmp_path: Path, fake_hub: Any) -> None:
    fake = fake_hub(FakeHub({}))
    ckpt = tmp_path / "ltxv-2b-0.9.8-distilled.safetensors"
    ckpt.write_bytes(b"")
    assert hub.resolve(ckpt, "checkpoint") == ckpt
    assert hub.resolve(str(tmp_path), "text_encoder") == tmp_path
    assert fake.calls == []


@pytest.mark.parametrize(
    ("name", "kind", "filename"),
    [
        ("ltxv-2b-0.9.8-distilled", "checkpoint", "ltxv-2b-0.9.8-distilled.safetensors"),
        ("ltxv-2b-0.9.8-distilled.safetensors", "checkpoint", "ltxv-2b-0.9.8-distilled.safetensors"),
        ("ltxv-13b-0.9.8-dev-fp8", "checkpoint", "ltxv-13b-0.9.8-dev-fp8.safetensors"),
        ("ltxv-2b-0.9.6-distilled", "checkpoint", "ltxv-2b-0.9.6-distilled-04-25.safetensors"),
        ("ltxv-spatial-upscaler-0.9.8.safetensors", "upsampler", "ltxv-spatial-upscaler-0.9.8.safetensors"),
        ("ltxv-spatial-upscaler-0.9.7", "upsampler", "ltxv-spatial-upscaler-0.9.7.safetensors"),
        ("ltxv-99b-1.0.safetensors", "checkpoint", "ltxv-99b-1.0.safetensors"),  # unknown names: the hub decides
    ],
)
def test_released_names_come_from_the_cache_without_network(
    fake_hub: Any, monkeypatch: pytest.MonkeyPatch, name: str, kind: Any, filename: str
) -> None:
    fake = fake_hub(FakeHub({f"Lightricks/LTX-Video:{filename}": f"/cache/{filename}"}))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: pytest.fail("the network was consulted"))
    assert hub.resolve(name, kind) == Path(f"/cache/{filename}")
    assert fake.calls == [(f"Lightricks/LTX-Video:{filename}", {"local_files_only": True})]


def test_every_preset_names_its_checkpoint_file() -> None:
    for name, recipe in PRESETS.items():
        if name == DEMO_PRESET:  # package data, not a hub file
            continue
        assert hub.hub_filename(name, "checkpoint") == recipe.checkpoint_path
        assert hub.RELEASED_FILES[recipe.checkpoint_path] == "checkpoint"  # type: ignore[index]
        if recipe.spatial_upscaler_model_path is not None:
            assert hub.RELEASED_FILES[recipe.spatial_upscaler_model_path] == "upsampler"


def test_uncached_files_are_downloaded_with_a_bounded_timeout(fake_hub: Any) -> None:
    key = "Lightricks/LTX-Video:ltxv-spatial-upscaler-0.9.8.safetensors"
    fake = fake_hub(FakeHub({}, online={key: "/downloaded/up.safetensors"}))
    assert hub.resolve("ltxv-spatial-upscaler-0.9.8", "upsampler") == Path("/downloaded/up.safetensors")
    assert fake.calls == [(key, {"local_files_only": True}), (key, {"etag_timeout": hub.ETAG_TIMEOUT_S})]


def test_text_encoder_snapshot(fake_hub: Any, tmp_path: Path) -> None:
    snap = tmp_path / "snapshot"
    fake = fake_hub(
        FakeHub({"PixArt-alpha/PixArt-XL-2-1024-MS": str(snap)}, online={"PixArt-alpha/PixArt-XL-2-1024-MS": "/dl"})
    )
    # A cached snapshot without the two folders (e.g. only model_index.json was fetched): download them.
    assert hub.resolve("PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder") == Path("/dl")
    patterns = {"allow_patterns": ["text_encoder/*", "tokenizer/*"]}
    assert fake.calls == [
        ("PixArt-alpha/PixArt-XL-2-1024-MS", {**patterns, "local_files_only": True}),
        ("PixArt-alpha/PixArt-XL-2-1024-MS", {**patterns, "etag_timeout": hub.ETAG_TIMEOUT_S}),
    ]
    (snap / "text_encoder").mkdir(parents=True)
    (snap / "tokenizer").mkdir()
    fake.calls.clear()
    assert hub.resolve("PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder") == snap
    assert len(fake.calls) == 1


@pytest.mark.parametrize("kind", ["checkpoint", "text_encoder"])
def test_offline_and_uncached_is_a_clear_load_error(fake_hub: Any, kind: Any) -> None:
    fake = fake_hub(FakeHub({}), reachable=False)
    name = "ltxv-13b-0.9.8-distilled" if kind == "checkpoint" else "PixArt-alpha/PixArt-XL-2-1024-MS"
    with pytest.raises(LoadError) as e:
        hub.resolve(name, kind)
    message = str(e.value)
    assert name in message and "not in the local Hugging Face cache and could not be downloaded" in message
    assert "huggingface.co is unreachable" in message
    assert all(kw.get("local_files_only") for _, kw in fake.calls)  # no download was attempted


def test_hub_offline_mode_is_honoured(fake_hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_hub(FakeHub({}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match=r"ltxv-2b-0.9.8-distilled.safetensors .*HF_HUB_OFFLINE is set"):
        hub.resolve("ltxv-2b-0.9.8-distilled", "checkpoint")
    assert len(fake.calls) == 1


def test_download_failures_become_load_errors(fake_hub: Any) -> None:
    fake_hub(FakeHub({}, error=ConnectionError("connection reset")))
    with pytest.raises(
        LoadError, match=r"ltxv-2b-0.9.8-distilled.safetensors .*could not be downloaded: connection reset"
    ):
        hub.resolve("ltxv-2b-0.9.8-distilled", "checkpoint")
    fake_hub(FakeHub({}, error=RuntimeError("404 entry not found")))
    with pytest.raises(LoadError, match=r"404 entry not found"):
        hub.resolve("my-model.safetensors", "checkpoint")


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        (
            "ltxv-7b",
            "checkpoint",
            r"ltxv-7b: no such file, and not a released checkpoint name \(known: ltx-video-2b-v0.9, ",
        ),
        ("ltxv-spatial-upscaler-0.9.8", "checkpoint", "is a released upsampler file, not a checkpoint"),
        ("ltxv-2b-0.9.8-distilled", "upsampler", "is a released checkpoint file, not a upsampler"),
        ("models/missing.safetensors", "checkpoint", "models/missing.safetensors: no such file"),
        ("t5-local-folder", "text_encoder", "no such folder, and not a hub repo id"),
        ("/abs/t5", "text_encoder", "no such folder, and not a hub repo id"),
    ],
)
def test_unknown_names_are_load_errors_without_network(fake_hub: Any, name: str, kind: Any, message: str) -> None:
    fake = fake_hub(FakeHub({}))
    with pytest.raises(LoadError, match=message):
        hub.resolve(name, kind)
    assert fake.calls == []


def test_hub_reachable_is_a_short_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.perf_counter()
    assert hub.hub_reachable() is False
    assert time.perf_counter() - start < 2 * hub.CONNECT_TIMEOUT_S
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.hub_reachable() is True  # behind a proxy the hub client decides


def test_real_hub_client_with_an_empty_cache_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real huggingface_hub cache lookup, an empty cache, no network: a LoadError within seconds."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    start = time.perf_counter()
    with pytest.raises(LoadError, match=r"ltxv-2b-0.9.8-distilled.safetensors .*not in the local Hugging Face cache"):
        hub.resolve("ltxv-2b-0.9.8-distilled", "checkpoint")
    with pytest.raises(LoadError, match=r"PixArt-alpha/PixArt-XL-2-1024-MS"):
        hub.resolve("PixArt-alpha/PixArt-XL-2-1024-MS", "text_encoder")
    assert time.perf_counter() - start < 10
