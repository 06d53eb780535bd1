"""Seed parity with the reference pipelines on a tiny checkpoint, fp32 on CPU.

ltxv's ``Pipeline.generate`` must give the video the reference's ``LTXVideoPipeline`` / ``LTXMultiScalePipeline``
gives when called right after ``torch.manual_seed(S)`` with ``generator=torch.Generator().manual_seed(S)``; ltxv itself
never touches the global RNG (checked below). Media are passed as tensors to both, so preprocessing is out of the
picture here (it has its own parity tests).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxv.pipelines.generate import Pipeline, load_pipeline
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, PassSettings, Recipe
from ltxv.testing.checkpoints import write_tiny_kit

ref_pipe = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
LQ8 = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory):
    return write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def ours(kit) -> Pipeline:
    return load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)


@pytest.fixture(scope="module")
def reference(kit):
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.models.transformers.transformer3d import Transformer3DModel
    from ltx_video.schedulers.rf import RectifiedFlowScheduler

    ckpt = str(kit.checkpoint)
    pipe = ref_pipe.LTXVideoPipeline(
        transformer=Transformer3DModel.from_pretrained(ckpt).float().eval(),
        patchifier=SymmetricPatchifier(patch_size=1),
        text_encoder=transformers.T5EncoderModel.from_pretrained(str(kit.text_encoder), subfolder="text_encoder"),
        tokenizer=transformers.AutoTokenizer.from_pretrained(str(kit.text_encoder), subfolder="tokenizer"),
        scheduler=RectifiedFlowScheduler.from_pretrained(ckpt),
        vae=CausalVideoAutoencoder.from_pretrained(ckpt).float().eval(),
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=None,
    )
    up = LatentUpsampler.from_pretrained(str(kit.upsampler)).float().eval()
    return pipe, up


def _pass_kwargs(p: PassSettings) -> dict[str, Any]:
    def lst(v: Any) -> Any:
        if isinstance(v, tuple):
            return [lst(x) for x in v]
        return v

    kw = {
        "num_inference_steps": p.num_inference_steps,
        "skip_initial_inference_steps": p.skip_initial_inference_steps,
        "skip_final_inference_steps": p.skip_final_inference_steps,
        "guidance_scale": lst(p.guidance_scale),
        "stg_scale": lst(p.stg_scale),
        "rescaling_scale": lst(p.rescaling_scale),
        "guidance_timesteps": lst(p.guidance_timesteps),
        "skip_block_list": lst(p.skip_block_list),
        "cfg_star_rescale": p.cfg_star_rescale,
        "tone_map_compression_ratio": p.tone_map_compression_ratio,
        "stochastic_sampling": p.stochastic_sampling,
    }
    if p.timesteps is not None:
        kw["timesteps"] = list(p.timesteps)
    return kw


def _run_reference(reference, req: GenerationRequest) -> torch.Tensor:
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    pipe, up = reference
    r = req.recipe
    strategy = {
        "attention_values": SkipLayerStrategy.AttentionValues,
        "attention_skip": SkipLayerStrategy.AttentionSkip,
        "transformer_block": SkipLayerStrategy.TransformerBlock,
        "residual": SkipLayerStrategy.Residual,
    }[r.stg_mode]
    items = [ref_pipe.ConditioningItem(c.media.unsqueeze(0), c.frame, c.strength) for c in req.conditioning]
    kwargs = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "height": req.height,
        "width": req.width,
        "num_frames": req.num_frames,
        "frame_rate": req.frame_rate,
        "output_type": "pt",
        "conditioning_items": items or None,
        "media_items": None if req.input_media is None else req.input_media.unsqueeze(0),
        "is_video": True,
        "vae_per_channel_normalize": True,
        "image_cond_noise_scale": req.image_cond_noise_scale,
        "decode_timestep": r.decode_timestep,
        "decode_noise_scale": r.decode_noise_scale,
        "skip_layer_strategy": strategy,
        "mixed_precision": False,
        "offload_to_cpu": False,
        "enhance_prompt": False,
    }
    torch.manual_seed(req.seed)
    kwargs["generator"] = torch.Generator().manual_seed(req.seed)
    with torch.no_grad():
        if r.pipeline_type == "base":
            video = pipe(**kwargs, **_pass_kwargs(r.first_pass)).images
        else:
            ms = ref_pipe.LTXMultiScalePipeline(pipe, latent_upsampler=up)
            video = ms(
                downscale_factor=r.downscale_factor,
                first_pass=_pass_kwargs(r.first_pass),
                second_pass=_pass_kwargs(r.second_pass),
                **kwargs,
            ).images
    return video[0].permute(1, 2, 3, 0)  # (F, H, W, 3)


def _compare(ours: Pipeline, reference, req: GenerationRequest) -> float:
    state = torch.random.get_rng_state()
    got = ours.generate(req).video
    assert torch.equal(state, torch.random.get_rng_state()), "ltxv must not touch the global RNG"
    want = _run_reference(reference, req)
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    print(f"max |ltxv - reference| = {diff:.2e}")
    assert diff <= TOL, diff
    # A different seed must change the result: the comparison above is not vacuous.
    other = ours.generate(dataclasses.replace(req, seed=req.seed + 1)).video
    assert (other - got).abs().max().item() > 1e-3
    return diff


DEV = PassSettings(
    num_inference_steps=8,
    guidance_timesteps=(1.0, 0.99, 0.95, 0.5),
    guidance_scale=(1.0, 3.0, 2.0, 1.0),
    stg_scale=(0.0, 1.0, 2.0, 1.0),
    rescaling_scale=(1.0, 0.5, 0.7, 1.0),
    skip_block_list=((), (0,), (1,), (0, 1)),
    cfg_star_rescale=True,
)
BASE = Recipe(
    first_pass=PassSettings(
        num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(1,)
    ),
    decode_timestep=0.05,
    decode_noise_scale=0.025,
)


def _req(**kw: Any) -> GenerationRequest:
    base = {
        "prompt": "a red fox runs through snow",
        "height": 64,
        "width": 96,
        "num_frames": 17,
        "frame_rate": 25.0,
        "seed": 7,
        "recipe": BASE,
    }
    base.update(kw)
    return GenerationRequest(**base)


def _image(seed: int, h: int = 64, w: int = 96, frames: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, frames, h, w, generator=g) * 2 - 1).clamp(-1, 1)


def test_t2v_dev_recipe_cfg_stg_per_step_lists(ours, reference) -> None:
    _compare(ours, reference, _req(recipe=Recipe(first_pass=DEV, decode_timestep=0.05, decode_noise_scale=0.025)))


@pytest.mark.parametrize("mode", ["attention_skip", "transformer_block"])
def test_t2v_stg_modes(ours, reference, mode: str) -> None:
    _compare(ours, reference, _req(recipe=dataclasses.replace(BASE, stg_mode=mode)))


def test_i2v(ours, reference) -> None:
    _compare(ours, reference, _req(conditioning=(ConditioningMedia(_image(1), 0, 1.0),)))


def test_two_keyframes_soft_strengths(ours, reference) -> None:
    items = (ConditioningMedia(_image(1), 0, 0.8), ConditioningMedia(_image(2), 16, 0.6))
    _compare(ours, reference, _req(num_frames=25, conditioning=items))


def test_forward_extension(ours, reference) -> None:
    _compare(ours, reference, _req(num_frames=25, conditioning=(ConditioningMedia(_image(3, frames=9), 0, 1.0),)))


def test_backward_extension(ours, reference) -> None:
    _compare(ours, reference, _req(num_frames=25, conditioning=(ConditioningMedia(_image(4, frames=9), 16, 1.0),)))


def test_v2v(ours, reference) -> None:
    recipe = dataclasses.replace(BASE, first_pass=dataclasses.replace(BASE.first_pass, skip_initial_inference_steps=1))
    _compare(ours, reference, _req(input_media=_image(5, frames=17), recipe=recipe))


def test_stochastic_sampling(ours, reference) -> None:
    recipe = dataclasses.replace(BASE, first_pass=dataclasses.replace(BASE.first_pass, stochastic_sampling=True))
    _compare(ours, reference, _req(recipe=recipe, conditioning=(ConditioningMedia(_image(6), 0, 1.0),)))


def test_distilled_multiscale(ours, reference) -> None:
    recipe = Recipe(
        pipeline_type="multi-scale",
        first_pass=PassSettings(timesteps=LQ8),
        second_pass=PassSettings(timesteps=(0.9094, 0.725, 0.4219), tone_map_compression_ratio=0.6),
        decode_timestep=0.05,
        decode_noise_scale=0.025,
    )
    req = _req(height=128, width=192, recipe=recipe, conditioning=(ConditioningMedia(_image(8, 128, 192), 0, 1.0),))
    _compare(ours, reference, req)


def test_padding_and_crop_of_odd_sizes(ours, reference, tmp_path: Path) -> None:
    """A 50x90x12 request runs at 64x96x17 and is cropped back, as the reference CLI does."""
    req = _req(height=50, width=90, num_frames=12)
    got = ours.generate(req).video
    assert got.shape == (12, 50, 90, 3)
    full = ours.generate(dataclasses.replace(req, height=64, width=96, num_frames=17)).video
    assert torch.equal(got, full[:12, 7:57, 3:93])


def test_v2v_under_multiscale_is_fixed(ours, reference) -> None:
    """The reference cannot run V2V with a multi-scale recipe (pass 1 starts at t = 1 and asserts, study §4.6);
    ltxv encodes the source at the pass-1 size and starts pass 1 from it (``denoise_strength`` picks the start)."""
    recipe = Recipe(
        pipeline_type="multi-scale",
        first_pass=PassSettings(timesteps=LQ8),
        second_pass=PassSettings(timesteps=(0.9094, 0.725, 0.4219)),
    )
    src = _image(9, 128, 192, frames=17)
    req = _req(height=128, width=192, recipe=recipe, input_media=src, denoise_strength=0.95)
    with pytest.raises(AssertionError):
        _run_reference(reference, dataclasses.replace(req, denoise_strength=None))
    got = ours.generate(req).video
    other_src = ours.generate(dataclasses.replace(req, input_media=_image(10, 128, 192, frames=17))).video
    t2v = ours.generate(dataclasses.replace(req, input_media=None, denoise_strength=None)).video
    assert got.shape == (17, 128, 192, 3)
    assert (got - other_src).abs().max() > 1e-3 and (got - t2v).abs().max() > 1e-3  # the source is used


def test_allowed_inference_steps_are_enforced(tmp_path: Path) -> None:
    allowed = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219)
    kit = write_tiny_kit(tmp_path, allowed_inference_steps=allowed)
    pipe = load_pipeline(kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32)
    ok = _req(recipe=Recipe(first_pass=PassSettings(timesteps=LQ8)))
    assert pipe.generate(ok).video.shape == (17, 64, 96, 3)
    with pytest.raises(ValueError, match="not allowed by this checkpoint"):
        pipe.generate(_req(recipe=Recipe(first_pass=PassSettings(num_inference_steps=5))))
