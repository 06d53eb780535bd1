"""The reference's ``inference.py`` as one process, for the whole-process benchmark: its imports, its model loading
(``create_ltx_video_pipeline`` / ``create_latent_upsampler`` step by step), the multi-scale call and its mp4 writer.

``ltx_video/inference.py`` itself cannot be imported here (it imports torchvision, which is not installed, for image
conditioning only), so this file runs its steps in its order with its libraries, and nothing of ltxv:

    python benchmarks/reference_process.py ARGS_JSON
"""

from __future__ import annotations

import json
import sys


def main(args: dict) -> None:
    # inference.py's imports (torchvision aside), before anything runs.
    import imageio
    import numpy as np
    import torch
    import yaml  # noqa: F401
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.models.transformers.transformer3d import Transformer3DModel
    from ltx_video.pipelines import crf_compressor  # noqa: F401
    from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline, LTXVideoPipeline
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy
    from PIL import Image  # noqa: F401
    from transformers import T5EncoderModel, T5Tokenizer

    kit, req, r = args["kit"], args["request"], args["recipe"]
    dtype = getattr(torch, args["dtype"])
    torch.manual_seed(req["seed"])  # inference.py's seed_everething (the decode noise comes from the global RNG)
    np.random.seed(req["seed"] % 2**32)
    ckpt = kit["checkpoint"]
    transformer = Transformer3DModel.from_pretrained(ckpt)
    if dtype == torch.bfloat16:
        transformer = transformer.to(torch.bfloat16)
    vae = CausalVideoAutoencoder.from_pretrained(ckpt)
    scheduler = RectifiedFlowScheduler.from_pretrained(ckpt)
    text_encoder = T5EncoderModel.from_pretrained(kit["text_encoder"], subfolder="text_encoder")
    tokenizer = T5Tokenizer.from_pretrained(kit["text_encoder"], subfolder="tokenizer")
    pipe = LTXVideoPipeline(
        transformer=transformer,
        patchifier=SymmetricPatchifier(patch_size=1),
        text_encoder=text_encoder.to(torch.bfloat16),  # inference.py casts the VAE and T5 to bf16 always
        tokenizer=tokenizer,
        scheduler=scheduler,
        vae=vae.to(torch.bfloat16),
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=None,
    ).to("cpu")
    upsampler = LatentUpsampler.from_pretrained(kit["upsampler"]).to("cpu").eval()
    multi_scale = LTXMultiScalePipeline(pipe, latent_upsampler=upsampler)
    strategy = {
        "attention_values": SkipLayerStrategy.AttentionValues,
        "attention_skip": SkipLayerStrategy.AttentionSkip,
        "transformer_block": SkipLayerStrategy.TransformerBlock,
        "residual": SkipLayerStrategy.Residual,
    }[r["stg_mode"]]
    images = multi_scale(
        downscale_factor=r["downscale_factor"],
        first_pass=r["first_pass"],
        second_pass=r["second_pass"],
        prompt=req["prompt"],
        negative_prompt=req["negative_prompt"],
        prompt_attention_mask=None,
        negative_prompt_attention_mask=None,
        height=req["height"],
        width=req["width"],
        num_frames=req["num_frames"],
        frame_rate=req["frame_rate"],
        generator=torch.Generator().manual_seed(req["seed"]),
        output_type="pt",
        callback_on_step_end=None,
        skip_layer_strategy=strategy,
        media_items=None,
        conditioning_items=None,
        is_video=True,
        vae_per_channel_normalize=True,
        image_cond_noise_scale=0.15,
        decode_timestep=r["decode_timestep"],
        decode_noise_scale=r["decode_noise_scale"],
        mixed_precision=False,
        offload_to_cpu=False,
        device="cpu",
        enhance_prompt=False,
    ).images
    images = images[:, :, : req["num_frames"]]
    video_np = (images[0].permute(1, 2, 3, 0).cpu().float().numpy() * 255).astype(np.uint8)  # inference.py's
    with imageio.get_writer(args["out"], fps=req["frame_rate"]) as video:
        for frame in video_np:
            video.append_data(frame)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
