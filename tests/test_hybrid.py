"""Hybrid 13B+2B: transformer labels, both schedule forms (the modelled system's table, control-long.md §6), the
pipeline that holds two transformers, its parity with the reference's multi-scale pipeline swapping transformers in a
step callback as the modelled system does, and residency of the active transformer only."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from ltxv.pipelines import generate
from ltxv.pipelines.generate import Pipeline
from ltxv.pipelines.hybrid import Schedule, default_schedule, label_for, parse_schedule, resolve, split_label
from ltxv.pipelines.presets import PRESETS
from ltxv.pipelines.request import GenerationRequest, RequestError
from ltxv.testing.checkpoints import write_single_file, write_tiny_kit
from ltxv.testing.configs import TINY_13B, TINY_VAE

DISTILLED = PRESETS["ltxv-2b-0.9.8-distilled"]  # 7 + 3 steps


def load_pipeline(*args: object, **kwargs: object) -> Pipeline:
    """The API's, in float32 (its default is bfloat16 where the CPU computes it fast): the parity is in fp32."""
    return generate.load_pipeline(*args, dtype=torch.float32, **kwargs)  # type: ignore[arg-type]


# --- labels and schedules ------------------------------------------------------------------------------------------


def test_labels_from_file_names_and_label_equals_path() -> None:
    assert label_for("weights/ltxv-13b-0.9.8-distilled.safetensors", "hybrid") == "13b"
    assert label_for("ltxv-2b-0.9.8-distilled-fp8.safetensors", "main") == "2b"
    assert label_for("LTXV-13B-0.9.7-DEV.safetensors", "main") == "13b"
    assert label_for("ltxv-tiny.safetensors", "hybrid") == "hybrid"
    assert label_for("ltxv-2b-vs-13b.safetensors", "main") == "main"  # two size tokens: no guess
    assert split_label("big=/w/a=b.safetensors") == ("big", "/w/a=b.safetensors")
    assert split_label("/w/ltxv-13b.safetensors") == (None, "/w/ltxv-13b.safetensors")


def test_parse_both_forms_and_their_errors() -> None:
    assert parse_schedule("13b:4,2b") == Schedule((("13b", 4), ("2b", None)))
    assert parse_schedule(" 13b:0.7 , 2b:3 ") == Schedule((("13b", 0.7), ("2b", 3)))
    assert parse_schedule('[["13B", 4], ["2B", 9999]]') == Schedule((("13B", 4), ("2B", 9999)), per_pass=True)
    assert parse_schedule([["13B", 0.7], ["2B", 0.3]]) == Schedule((("13B", 0), ("2B", 0)), per_pass=True)
    for bad, match in (
        ("13b,2b:3", "only the last entry"),
        ("13b:x", "neither a step count"),
        ("13b:1.5", "share in"),
        ("13b:-1", ">= 0"),
        (":3", "expected LABEL"),
        ("[[13, 4]]", r"expected \[name, steps\]"),
        ('[["13B", -1]]', "a step count must be >= 0"),
        ("[", "not valid JSON"),
        ("[]", "non-empty list"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_schedule(bad)
    with pytest.raises(RequestError, match="transformer_schedule: entry '13b:x'"):
        GenerationRequest("p", transformer_schedule="13b:x").validate()


LABELS = ["2b", "13b"]


@pytest.mark.parametrize(
    ("spec", "pass1", "pass2"),
    [  # the modelled system's own table (control-long.md §6), re-derived from its callback
        (None, "13 13 13 13 2 2 2", "2 2 2"),
        ('[["13B",7],["2B",3]]', "13 13 13 13 13 13 13", "2 2 2"),
        ('[["13B",5],["2B",2]]', "13 13 13 13 13 2 2", "2 2 2"),
        ('[["2B",9999]]', "2 2 2 2 2 2 2", "2 2 2"),
        ('[["13B",9999]]', "13 13 13 13 13 13 13", "13 13 13"),
        ('[["13B",0.7],["2B",0.3]]', "13 13 13 13 13 13 13", "13 13 13"),
        ('[["13B",2],["2B",2],["13B",3]]', "13 13 2 2 13 13 13", "13 13 2"),
        # the whole-trajectory form counts over 7 + 3 = 10 steps
        ("13b:4,2b", "13 13 13 13 2 2 2", "2 2 2"),
        ("13b:8,2b", "13 13 13 13 13 13 13", "13 2 2"),
        ("13b:0.7,2b", "13 13 13 13 13 13 13", "2 2 2"),
        ("13b:2,2b:2,13b", "13 13 2 2 13 13 13", "13 13 13"),
        ("2b:3,13b:2", "2 2 2 13 13 13 13", "13 13 13"),  # the last entry takes the rest
        ("13B", "13 13 13 13 13 13 13", "13 13 13"),  # labels match case-insensitively
    ],
)
def test_schedule_table(spec: str | None, pass1: str, pass2: str) -> None:
    schedule = default_schedule({"2b": 2048, "13b": 4096}, 7) if spec is None else parse_schedule(spec)
    got = resolve(schedule, [7, 3], LABELS)
    assert [" ".join(x.removesuffix("b") for x in p) for p in got] == [pass1, pass2]


def test_unknown_label_is_named() -> None:
    with pytest.raises(ValueError, match=r"names '7b', but the pipeline's transformers are 2b, 13b"):
        resolve(parse_schedule("7b:3,2b"), [7, 3], LABELS)


# --- the pipeline --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny checkpoints of different widths (2B- and 13B-shaped heads) with the same VAE (same seed), named like
    the released files, and the shared upsampler and T5."""
    root = tmp_path_factory.mktemp("hybrid")
    kit = write_tiny_kit(root, seed=0)
    small = root / "ltxv-2b-tiny.safetensors"
    shutil.move(kit.checkpoint, small)
    big = write_single_file(root / "ltxv-13b-tiny.safetensors", TINY_13B, TINY_VAE, seed=0)
    return {"2b": small, "13b": big, "upsampler": kit.upsampler, "text": kit.text_encoder}


@pytest.fixture(scope="module")
def hybrid(kits: dict[str, Path]) -> Pipeline:
    return load_pipeline(kits["2b"], upsampler=kits["upsampler"], text_encoder=kits["text"], hybrid=kits["13b"])


def _request(**kw: object) -> GenerationRequest:
    base: dict = {"height": 64, "width": 96, "num_frames": 17, "frame_rate": 24.0, "seed": 5, "recipe": DISTILLED}
    return GenerationRequest("a kite over green hills", negative_prompt="", **(base | kw))


def test_loaded_labels_and_the_default_schedule_reported(hybrid: Pipeline) -> None:
    assert list(hybrid.transformers) == ["2b", "13b"]
    assert hybrid.transformers["13b"].cfg.inner_dim == 256 and hybrid.transformers["2b"].cfg.inner_dim == 128
    assert hybrid.transformers["2b"] is hybrid.models.transformer
    events: list[tuple[int, int, str | None]] = []
    result = hybrid.generate(
        _request(), callback=lambda e: events.append((e.pass_index, e.done, e.model)) if e.stage == "denoise" else None
    )
    want = (("13b",) * 4 + ("2b",) * 3, ("2b",) * 3)
    assert result.step_models == want
    assert [m for _, _, m in events] == [*want[0], *want[1]]


def test_one_model_schedule_is_bit_identical_to_that_model_alone(hybrid: Pipeline, kits: dict[str, Path]) -> None:
    for label in ("2b", "13b"):
        alone = load_pipeline(kits[label], upsampler=kits["upsampler"], text_encoder=kits["text"])
        want = alone.generate(_request())
        got = hybrid.generate(_request(transformer_schedule=label))
        assert torch.equal(got.video, want.video) and torch.equal(got.latents, want.latents), label
        assert got.step_models == ((label,) * 7, (label,) * 3)
    mixed = hybrid.generate(_request(transformer_schedule="13b:4,2b")).video
    assert (mixed - want.video).abs().max() > 1e-3  # the schedule changes the video: the check above is not vacuous


def test_three_spellings_of_the_default_agree(hybrid: Pipeline) -> None:
    default = hybrid.generate(_request()).video
    for spec in ("13b:4,2b", '[["13B", 4], ["2B", 9999]]'):
        assert torch.equal(hybrid.generate(_request(transformer_schedule=spec)).video, default), spec


def test_incompatible_or_clashing_transformers_are_refused(kits: dict[str, Path], tmp_path: Path) -> None:
    other = write_single_file(
        tmp_path / "ltxv-13b-wide.safetensors", dataclasses.replace(TINY_13B, caption_channels=64), TINY_VAE
    )
    with pytest.raises(RequestError, match="caption_channels=64, the main one 32: they do not share a latent space"):
        load_pipeline(kits["2b"], text_encoder=kits["text"], hybrid=other)
    with pytest.raises(RequestError, match="two transformers are labelled '2b'"):
        load_pipeline(kits["2b"], text_encoder=kits["text"], hybrid=f"2b={kits['13b']}")
    pipe = load_pipeline(
        kits["2b"], upsampler=kits["upsampler"], text_encoder=kits["text"], hybrid=f"big={kits['13b']}"
    )
    assert list(pipe.transformers) == ["2b", "big"]
    with pytest.raises(RequestError, match="names '13b', but the pipeline's transformers are 2b, big"):
        pipe.generate(_request(transformer_schedule="13b:2,2b"))


def test_sequential_residency_moves_only_the_active_transformer(kits: dict[str, Path]) -> None:
    pipe = load_pipeline(
        kits["2b"], upsampler=kits["upsampler"], text_encoder=kits["text"], hybrid=kits["13b"], residency="sequential"
    )
    pipe.generate(_request(transformer_schedule="13b:2,2b:3,13b"))  # 13 13 2 2 2 13 13 | 13 13 13
    trace = ["".join(("+" if op == "load" else "-", role)) for op, role in pipe.residency.trace]
    passes = [
        trace[trace.index("+text_encoder") + 2 : trace.index("+upsampler")],
        trace[trace.index("-upsampler") + 1 :],
    ]
    s13, s2 = ["+transformer:13b", "-transformer:13b"], ["+transformer:2b", "-transformer:2b"]
    assert passes[0] == [*s13, *s2, *s13]
    assert passes[1] == ["+transformer:13b", "-transformer:13b", "+vae", "-vae"]
    resident = load_pipeline(
        kits["2b"], upsampler=kits["upsampler"], text_encoder=kits["text"], hybrid=kits["13b"], residency="resident"
    )
    resident.generate(_request(transformer_schedule="13b:2,2b"))
    assert ("load", "transformer:13b") in resident.residency.trace
    assert ("unload", "transformer:13b") not in resident.residency.trace


# --- parity with the reference swapping transformers as the modelled system does -------------------------------------


def test_default_schedule_equals_reference_multiscale_with_swapping_callback(hybrid: Pipeline, kits) -> None:
    ref_pipe = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    transformers = pytest.importorskip("transformers")
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.models.transformers.transformer3d import Transformer3DModel
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    small, text = str(kits["2b"]), str(kits["text"])
    t2b = Transformer3DModel.from_pretrained(small).float().eval()
    t13b = Transformer3DModel.from_pretrained(str(kits["13b"])).float().eval()
    pipe = ref_pipe.LTXVideoPipeline(
        transformer=t2b,
        patchifier=SymmetricPatchifier(patch_size=1),
        text_encoder=transformers.T5EncoderModel.from_pretrained(text, subfolder="text_encoder"),
        tokenizer=transformers.AutoTokenizer.from_pretrained(text, subfolder="tokenizer"),
        scheduler=RectifiedFlowScheduler.from_pretrained(small),
        vae=CausalVideoAutoencoder.from_pretrained(small).float().eval(),
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=None,
    )
    ms = ref_pipe.LTXMultiScalePipeline(pipe, LatentUpsampler.from_pretrained(str(kits["upsampler"])).float().eval())
    # The modelled system's default: int(0.7 * 7) = 4 steps of 13B from the start, then 2B; pass 2 keeps 2B.
    boundaries, ran = [(0, 4, t13b), (4, 7, t2b)], []

    def on_step_end(p: object, i: int, t: object, kwargs: dict) -> dict:
        ran.append("13b" if p.transformer is t13b else "2b")  # type: ignore[attr-defined]
        for start, _, model in boundaries:
            if i + 1 == start:
                p.transformer = model  # type: ignore[attr-defined]
                break
        return kwargs

    pipe.transformer = t13b
    req = _request()
    r = req.recipe
    passes = [
        {"timesteps": list(p.timesteps), "num_inference_steps": len(p.timesteps), "guidance_scale": 1.0}
        | {"stg_scale": 0.0, "rescaling_scale": 1.0, "skip_block_list": None, "tone_map_compression_ratio": 0.0}
        for p in (r.first_pass, r.second_pass)
    ]
    torch.manual_seed(req.seed)
    with torch.no_grad():
        want = (
            ms(
                downscale_factor=r.downscale_factor,
                first_pass=passes[0],
                second_pass=passes[1],
                prompt=req.prompt,
                negative_prompt=req.negative_prompt,
                height=req.height,
                width=req.width,
                num_frames=req.num_frames,
                frame_rate=req.frame_rate,
                generator=torch.Generator().manual_seed(req.seed),
                output_type="pt",
                conditioning_items=None,
                is_video=True,
                vae_per_channel_normalize=True,
                image_cond_noise_scale=0.0,
                decode_timestep=r.decode_timestep,
                decode_noise_scale=r.decode_noise_scale,
                skip_layer_strategy=SkipLayerStrategy.AttentionValues,
                mixed_precision=False,
                offload_to_cpu=False,
                enhance_prompt=False,
                callback_on_step_end=on_step_end,
            )
            .images[0]
            .permute(1, 2, 3, 0)
        )
    result = hybrid.generate(dataclasses.replace(req, image_cond_noise_scale=0.0))
    assert ran == ["13b"] * 4 + ["2b"] * 6
    assert [*result.step_models[0], *result.step_models[1]] == ran
    diff = (result.video - want).abs().max().item()
    print(f"max |ltxv hybrid - reference with swaps| = {diff:.2e}")
    assert diff <= 1e-6, diff


def test_cli_hybrid_records_the_models_in_the_safetensors(kits: dict[str, Path], tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    from ltxv import cli

    out = tmp_path / "h.safetensors"
    argv = ["generate", "--prompt", "a kite", "--height", "64", "--width", "96", "--num-frames", "9", "--out", str(out)]
    argv += [
        "--checkpoint",
        str(kits["2b"]),
        "--upsampler",
        str(kits["upsampler"]),
        "--text-encoder",
        str(kits["text"]),
    ]
    argv += ["--hybrid", f"big={kits['13b']}", "--transformer-schedule", "big:0.5,2b", "--device", "cpu"]
    assert cli.main([*argv, "--dtype", "float32"]) == 0
    with safe_open(str(out), "pt") as f:
        recorded = json.loads(f.metadata()["step_models"])
    assert recorded == [["big"] * 5 + ["2b"] * 2, ["2b"] * 3]


def test_long_video_windows_follow_the_schedule(hybrid: Pipeline) -> None:
    events: list[tuple[int, str | None]] = []
    req = _request(num_frames=41, temporal_tile_frames=24, temporal_overlap_frames=8, transformer_schedule="13b:3,2b")
    result = hybrid.generate(
        req, callback=lambda e: events.append((e.window, e.model)) if e.stage == "denoise" else None
    )
    # The multi-scale recipe's two passes run window by window; the schedule counts over pass 1's 7 then pass 2's 3.
    steps = (("13b",) * 3 + ("2b",) * 4, ("2b",) * 3)
    assert result.step_models == steps
    assert events == [(k, m) for labels in steps for k in range(3) for m in labels]


def test_memory_estimate_counts_both_transformers(kits: dict[str, Path]) -> None:
    from ltxv.quant.fp8 import module_bytes

    for mode in ("resident", "sequential"):
        pipe = load_pipeline(
            kits["2b"], upsampler=kits["upsampler"], text_encoder=kits["text"], hybrid=kits["13b"], residency=mode
        )
        est = pipe.memory_estimate(_request())
        small, big = (module_bytes(pipe.transformers[k]) for k in ("2b", "13b"))
        if mode == "resident":
            assert est.weights["transformer"] == small and est.weights["transformer:13b"] == big
        else:  # one transformer on the device at a time: the larger
            assert est.weights["transformer"] == big and "transformer:13b" not in est.weights
