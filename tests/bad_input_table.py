"""The rows of the bad-input table (``bad_inputs.Bad``) and the files they name (``@name``): every kind of bad input
issue 14 lists, and the neighbours of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from bad_inputs import Bad, Env

from ltxv.pipelines.request import ConditioningMedia, ControlVideo


def write_files(root: Path, kit: Any) -> dict[str, Path]:
    """The bad (and a few good) files the table refers to by name."""
    from safetensors.torch import save_file

    from ltxv.io.video import write_mp4, write_png
    from ltxv.testing.checkpoints import write_single_file
    from ltxv.testing.configs import TINY_UPSAMPLER
    from ltxv.testing.text import write_tiny_text_encoder

    f: dict[str, Path] = {}
    g = torch.Generator().manual_seed(0)
    f["img"] = write_png(root / "img.png", torch.rand(64, 96, 3, generator=g))
    from PIL import Image

    Image.open(f["img"]).convert("RGB").save(root / "jpeg-named.png", format="JPEG")
    f["jpeg_named_png"] = root / "jpeg-named.png"
    f["vid9"] = write_mp4(root / "vid9.mp4", torch.rand(9, 64, 96, 3, generator=g), 24)
    f["vid17"] = write_mp4(root / "vid17.mp4", torch.rand(17, 64, 96, 3, generator=g), 24)
    f["tiny_img"] = write_png(root / "tiny.png", torch.rand(1, 2, 3, generator=g))
    raw = {
        "corrupt_png": b"\x89PNG\r\n\x1a\n" + b"\x00\x01garbage" * 8,
        "text_mp4": b"this is not a video, just words\n" * 4,
        "empty_mp4": b"",
        "html_png": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "gguf": b"GGUF\x03\x00\x00\x00" + b"\x00" * 64,
        "html_st": b"<html><head><title>Sign in</title></head></html>" + b" " * 64,
        "empty_st": b"",
        "yaml_bad_key": b"num_inferense_steps: 8\n",
        "yaml_not_yaml": b"pipeline_type: [unclosed\n",
        "yaml_three_pass": b"pipeline_type: three-pass\n",
        "yaml_lists": b"guidance_scale: [1.0, 2.0]\n",
        "yaml_zero_steps": b"num_inference_steps: 0\n",
        "yaml_skip_all": b"num_inference_steps: 4\nskip_initial_inference_steps: 2\nskip_final_inference_steps: 2\n",
        "yaml_stg_mode": b"stg_mode: sideways\n",
        "yaml_tone": b"tone_map_compression_ratio: 2.0\n",
        "yaml_cache": b"cache: static:2,20\n",
        "yaml_decode_t": b"decode_timestep: -1\n",
        "yaml_downscale": (
            b"pipeline_type: multi-scale\ndownscale_factor: 0\nfirst_pass: {num_inference_steps: 2}\n"
            b"second_pass: {num_inference_steps: 2}\n"
        ),
        "yaml_timesteps": b"timesteps: [1.0, 0.5]\nguidance_scale: 1.0\nstg_scale: 0.0\n",
        "yaml_bad_timesteps": b"timesteps: [1.5, 0.5]\n",
        "yaml_stg_list": (
            b"guidance_timesteps: [1.0, 0.5]\nguidance_scale: [1.0, 1.0]\nstg_scale: [0.0, 2.0]\n"
            b"skip_block_list: [[5], [7]]\nnum_inference_steps: 4\n"
        ),
        "afile": b"a plain file",
    }
    for name, data in raw.items():
        suffix = {"corrupt_png": ".png", "html_png": ".png", "gguf": ".safetensors", "afile": ""}.get(name, "")
        suffix = suffix or (".mp4" if name.endswith("mp4") else ".safetensors" if name.endswith("st") else ".yaml")
        f[name] = root / f"{name}{suffix}"
        f[name].write_bytes(data)
    f["folder"] = root / "a-folder.mp4"
    f["folder"].mkdir()
    f["pickle"] = root / "pickled.safetensors"
    torch.save({"w": torch.zeros(3)}, f["pickle"])
    data = kit.checkpoint.read_bytes()
    f["truncated"] = root / "truncated.safetensors"
    f["truncated"].write_bytes(data[: len(data) - 5000])
    f["allowed"] = write_single_file(root / "allowed.safetensors", allowed_inference_steps=(1.0, 0.9937, 0.725))
    from ltxv.testing.checkpoints import write_upsampler_file

    f["up32"] = write_upsampler_file(root / "up32.safetensors", replace(TINY_UPSAMPLER, in_channels=32))
    # Text-encoder folders: pickle only; 64 wide (the tiny transformer takes 32); no tokenizer; bad config; a
    # tensor missing.
    import shutil

    for name in ("te_pickle", "te_notok", "te_badcfg", "te_missing"):
        shutil.copytree(kit.text_encoder, root / name)
        f[name] = root / name
    (f["te_pickle"] / "text_encoder" / "model.safetensors").unlink()
    torch.save({"shared.weight": torch.zeros(2, 2)}, f["te_pickle"] / "text_encoder" / "pytorch_model.bin")
    shutil.rmtree(f["te_notok"] / "tokenizer")
    (f["te_badcfg"] / "text_encoder" / "config.json").write_text("<html>not json</html>")
    from safetensors.torch import load_file

    weights = load_file(str(f["te_missing"] / "text_encoder" / "model.safetensors"))
    weights.pop(sorted(weights)[0])
    save_file(weights, str(f["te_missing"] / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    f["te_wide"] = write_tiny_text_encoder(root / "te_wide", d_model=64)
    # LoRA files: a key naming a block the tiny transformer lacks; a DoRA; configs naming them
    pair = {"transformer.transformer_blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 128)}
    pair["transformer.transformer_blocks.9.attn1.to_q.lora_B.weight"] = torch.zeros(128, 2)
    save_file(pair, str(root / "lora_bad.safetensors"))
    f["lora_bad"] = root / "lora_bad.safetensors"
    dora = {k.replace(".9.", ".0."): v for k, v in pair.items()}
    save_file(
        {**dora, "transformer.transformer_blocks.0.attn1.to_q.dora_scale": torch.ones(1, 128)}, str(root / "dora.st")
    )
    f["lora_dora"] = root / "dora.st"
    for name, text in (
        ("yaml_lora_missing", "loras: [no-such-lora.safetensors]\n"),
        ("yaml_lora_bad", f"loras: ['{f['lora_bad']}:0.5']\n"),
        ("yaml_lora_inf", "loras: [{path: x.safetensors, scale: .inf}]\n"),
    ):
        f[name] = root / f"{name}.yaml"
        f[name].write_text(text)
    from ltxv.testing.configs import TINY_13B

    f["wide_caption"] = write_single_file(root / "ltxv-13b-wide.safetensors", replace(TINY_13B, caption_channels=64))
    for name in ("ltxv-2b-a", "ltxv-2b-b"):  # two files whose names give the same label
        f[name] = root / f"{name}.safetensors"
        shutil.copyfile(kit.checkpoint, f[name])
    return f


# --- the table ------------------------------------------------------------------------------------------------------

C = ConditioningMedia
NAN, INF = float("nan"), float("inf")


def _tensor(*shape: int, dtype: torch.dtype = torch.float32, value: float | None = None) -> torch.Tensor:
    t = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return t.fill_(value).to(dtype) if value is not None else t.to(dtype)


def _nan_video() -> torch.Tensor:
    t = _tensor(3, 9, 64, 96)
    t[0, 3, 5, 7] = NAN
    return t


def _vae(env: Env) -> Any:
    return env.pipes["base"].models.vae


def _up(env: Env) -> Any:
    return env.pipes["base"].models.upsampler


def _load(**kw: Any) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        import ltxv

        args = {"checkpoint": "@ckpt", "upsampler": "@up", "text_encoder": "@te", "device": "cpu"} | kw
        return ltxv.load(**{k: env.path(v) for k, v in args.items()})

    return call


def _image() -> Any:
    from PIL import Image

    return Image.new("RGB", (96, 64))


V = "@vid9"
CASES: tuple[Bad, ...] = (
    # prompts
    Bad("prompt-empty", "prompt is empty", {"prompt": ""}, param="prompt"),
    Bad("prompt-spaces", "prompt is empty", {"prompt": "   "}, param="prompt"),
    Bad("prompt-newlines", "prompt is empty", {"prompt": "\t\n "}, param="prompt"),
    Bad("prompt-nul", "prompt contains a NUL", {"prompt": "a\x00b"}, param="prompt"),
    Bad("prompt-none", "prompt must be a string, got None", {"prompt": None}, param="prompt"),
    Bad("prompt-int", "prompt must be a string, got 3", {"prompt": 3}, param="prompt"),
    Bad("prompt-list", "prompt must be a string", {"prompt": ["a", "b"]}, param="prompt"),
    Bad("negative-none", "negative_prompt must be a string", {"negative_prompt": None}, param="negative_prompt"),
    Bad("negative-nul", "negative_prompt contains a NUL", {"negative_prompt": "ugly\x00"}, param="negative_prompt"),
    # sizes
    Bad("height-0", "height must be a positive integer, got 0", {"height": 0}, param="height"),
    Bad("height-negative", "height must be a positive integer, got -32", {"height": -32}, param="height"),
    Bad("height-float", "height must be a positive integer, got 12.5", {"height": 12.5}, param="height"),
    Bad("height-string", "height must be a positive integer, got '64' (str)", {"height": "64"}, param="height"),
    Bad("height-bool", "height must be a positive integer, got True", {"height": True}, param="height"),
    Bad("width-0", "width must be a positive integer", {"width": 0}, param="width"),
    Bad("width-none", "width must be a positive integer, got None", {"width": None}, param="width"),
    Bad("frames-0", "num_frames must be a positive integer", {"num_frames": 0}, param="num_frames"),
    Bad("frames-negative", "num_frames must be a positive integer", {"num_frames": -9}, param="num_frames"),
    Bad("frames-float", "num_frames must be a positive integer, got 9.0", {"num_frames": 9.0}, param="num_frames"),
    Bad("too-small-multiscale", "32x32 is too small for multi-scale", {"height": 32, "width": 32}, param="height"),
    Bad("one-frame-upsampler", "too small for the latent upsampler", {"num_frames": 1}, param="num_frames"),
    # frame rate
    *(
        Bad(
            f"fps-{name}",
            "frame_rate must be a number of frames per second in [1, 240]",
            {"frame_rate": v},
            param="frame_rate",
        )
        for name, v in (("0", 0.0), ("tiny", 0.001), ("huge", 1e9), ("nan", NAN), ("inf", INF), ("negative", -30.0))
    ),
    Bad("fps-string", "frame_rate must be a number", {"frame_rate": "30"}, param="frame_rate"),
    # seeds
    Bad("seed-2^64", "seed must be an integer in [-2^63, 2^64 - 1]", {"seed": 2**64}, param="seed"),
    Bad("seed-below", "seed must be an integer in [-2^63, 2^64 - 1]", {"seed": -(2**63) - 1}, param="seed"),
    Bad("seed-none", "seed must be an integer", {"seed": None}, param="seed"),
    Bad("seed-float", "seed must be an integer", {"seed": 1.5}, param="seed"),
    Bad("seed-string", "seed must be an integer", {"seed": "7"}, param="seed"),
    # other scalars
    Bad("icn-negative", "image_cond_noise_scale must be a number >= 0", {"image_cond_noise_scale": -1.0}),
    Bad("icn-nan", "image_cond_noise_scale must be a number >= 0", {"image_cond_noise_scale": NAN}),
    Bad("preprocess-string", "media_preprocess must be True or False", {"media_preprocess": "yes"}),
    Bad("denoise-without-source", "denoise_strength is for video-to-video", {"denoise_strength": 0.5}),
    Bad("denoise-0", "denoise_strength must be a number in (0, 1]", {"input_media": V, "denoise_strength": 0.0}),
    Bad("denoise-1.5", "denoise_strength must be a number in (0, 1]", {"input_media": V, "denoise_strength": 1.5}),
    Bad(
        "denoise-below-steps",
        "denoise_strength 0.5 is below every step",
        {"input_media": V, "denoise_strength": 0.5},
        param="denoise_strength",
    ),
    # step caching (ltxv.runtime.cache)
    Bad("cache-method", "unknown method 'teacache'", {"cache": "teacache:0.1"}, param="cache"),
    Bad("cache-fbc-bare", "fbc takes a threshold", {"cache": "fbc"}, param="cache"),
    Bad("cache-fbc-negative", "fbc threshold must be a number >= 0", {"cache": "fbc:-0.1"}, param="cache"),
    Bad("cache-fbc-option", "unknown fbc option 'warm=2'", {"cache": "fbc:0.1,warm=2"}, param="cache"),
    Bad(
        "cache-static-interval", "static needs start >= 0 and interval >= 1", {"cache": "static:2,20,0"}, param="cache"
    ),
    Bad("cache-static-order", "static end 2 is before its start 5", {"cache": "static:5,2,2"}, param="cache"),
    Bad("cache-not-string", "a cache spec is a string", {"cache": 0.1}, param="cache"),
    # conditioning lists and items
    Bad(
        "cond-string",
        "conditioning must be a tuple of ConditioningMedia",
        {"conditioning": "@img"},
        param="conditioning",
    ),
    Bad("cond-dict", "conditioning must be a tuple of ConditioningMedia", {"conditioning": {"media": "x"}}),
    Bad("cond-tuples", "conditioning[0] must be a ConditioningMedia", {"conditioning": (("x.png", 0),)}),
    Bad("strength-1.5", "conditioning[0].strength must be a number in [0, 1]", {"conditioning": (C("@img", 0, 1.5),)}),
    Bad("strength-negative", "strength must be a number in [0, 1]", {"conditioning": (C("@img", 0, -0.1),)}),
    Bad("strength-nan", "strength must be a number in [0, 1]", {"conditioning": (C("@img", 0, NAN),)}),
    Bad("strength-string", "strength must be a number", {"conditioning": (C("@img", 0, "1"),)}),
    Bad("frame-past-end", "start frame 9 is outside the video (0..8)", {"conditioning": (C("@img", 9),)}),
    Bad(
        "frame-negative", "start frame -1 is outside", {"conditioning": (C("@img", -1),)}, param="conditioning[0].frame"
    ),
    Bad("frame-float", "conditioning[0].frame must be an integer", {"conditioning": (C("@img", 1.5),)}),
    Bad("media-none", "conditioning[0].media must be a file path or", {"conditioning": (C(None),)}),
    Bad("media-pil", "save it to a file", {"conditioning": (C(_image()),)}, param="conditioning[0].media"),
    Bad("media-int", "conditioning[0].media must be a file path or", {"conditioning": (C(3),)}),
    Bad("media-empty-path", "conditioning[0].media must be a file path", {"conditioning": (C(""),)}),
    # media files
    *(
        Bad(f"media-{name}", message, {"conditioning": (C(f"@{name}"),)}, param="conditioning[0].media")
        for name, message in (
            ("corrupt_png", "not a readable image"),
            ("text_mp4", "not a readable video: this is a text file"),
            ("empty_mp4", "not a readable video: this is an empty file"),
            ("html_png", "this is an HTML page"),
            ("gguf", "this is a GGUF file"),
            ("folder", "not a file"),
            ("tiny_img", "a 2x1 frame is too small to crop to the aspect of 96x64"),
        )
    ),
    Bad("media-missing", "no such file", {"conditioning": (C("/nonexistent/x.png"),)}),
    Bad("media-checkpoint", "this is a safetensors file", {"conditioning": (C("@ckpt"),)}),
    Bad(
        "video-at-frame-3",
        "a conditioning video must start at a multiple of 8, got frame 3",
        {"num_frames": 17, "conditioning": (C("@vid17", 3),)},
        param="conditioning[0].frame",
    ),
    Bad("v2v-image", "the input image but 9 frames are generated", {"input_media": "@img"}, param="input_media"),
    Bad("v2v-short", "the input video has 9 frames but 17", {"input_media": V, "num_frames": 17}),
    Bad("v2v-missing", "no such file", {"input_media": "/nonexistent/in.mp4"}, param="input_media"),
    Bad("v2v-corrupt", "not a readable video", {"input_media": "@text_mp4"}, param="input_media"),
    # media tensors
    *(
        Bad(f"tensor-{name}", message, {"conditioning": (C(t),)}, param="conditioning[0].media")
        for name, t, message in (
            ("uint8", _tensor(3, 64, 96, dtype=torch.uint8), "must be float in [-1, 1], got torch.uint8"),
            ("int64", _tensor(3, 64, 96, dtype=torch.int64), "must be float in [-1, 1], got torch.int64"),
            ("0-255", _tensor(3, 64, 96, value=200.0), "values must lie in [-1, 1], got [200, 200]"),
            ("0-50", _tensor(3, 64, 96).abs() * 50, "values must lie in [-1, 1]"),
            ("nan", _nan_video(), "NaN or infinite"),
            ("inf", _tensor(3, 64, 96, value=INF), "NaN or infinite"),
            ("4-channels", _tensor(4, 64, 96), "(3, F, H, W) or (3, H, W) RGB, got shape (4, 64, 96)"),
            ("channels-last", _tensor(64, 96, 3), "(3, F, H, W) or (3, H, W) RGB"),
            ("batch-2", _tensor(2, 3, 9, 64, 96), "(3, F, H, W) or (3, H, W) RGB"),
            ("empty", _tensor(3, 0, 64, 96), "the media tensor is empty"),
        )
    ),
    Bad("source-tensor-nan", "NaN or infinite", {"input_media": _nan_video()}, param="input_media"),
    # recipes
    Bad("recipe-none", "recipe must be a Recipe", {"recipe": None}, param="recipe"),
    Bad("recipe-name", "recipe must be a Recipe", {"recipe": "ltxv-2b-0.9.8-distilled"}, param="recipe"),
    Bad("recipe-dict", "recipe must be a Recipe", {"recipe": {"pipeline_type": "base"}}, param="recipe"),
    Bad(
        "stg-blocks-2b-dev",
        "STG perturbs block(s) [19] at step 0",
        {"recipe": "preset:ltxv-2b-0.9.6-dev"},
        param="recipe.first_pass.skip_block_list",
    ),
    Bad(
        "stg-blocks-13b-dev",
        "STG perturbs block(s) [22, 35, 39] at step 3 (t=0.9950)",
        {"recipe": "preset:ltxv-13b-0.9.8-dev"},
    ),
    Bad("stg-blocks-per-step", "STG perturbs block(s) [7] at step 1", {"recipe": "yaml:yaml_stg_list"}),
    Bad("multiscale-no-upsampler", "needs a latent upsampler", {"prompt": "a kite"}, param="upsampler", variant="noup"),
    Bad("yaml-skip-all", "cannot skip 2 initial and 2 final steps of 4", {"recipe": "yaml:yaml_skip_all"}),
    Bad(
        "timesteps-not-allowed",
        "timestep 0.5 (step 1) is not allowed",
        {"recipe": "yaml:yaml_timesteps"},
        variant="allowed",
    ),
    Bad("memory", "the run needs about", {"num_frames": 1001}, param="num_frames", variant="tight"),
    Bad("limits-pixels", "over the limit of 8192", {"height": 96}, param="height", variant="limits"),
    Bad(
        "limits-frames",
        "num_frames 9 is over the limit of 5",
        {"prompt": "a kite"},
        param="num_frames",
        variant="limits",
    ),
    # recipe files (CLI: --pipeline-config; the API doors read the file with load_recipe, which raises)
    *(
        Bad(f"yaml-{name}", message, {"recipe": f"yaml:yaml_{name}"})
        for name, message in (
            ("bad_key", "unknown pipeline config key(s): num_inferense_steps"),
            ("not_yaml", "is not valid YAML"),
            ("three_pass", "pipeline_type must be 'base' or 'multi-scale'"),
            ("lists", "per-step lists ['guidance_scale'] need guidance_timesteps"),
            ("zero_steps", "num_inference_steps must be an integer >= 1, got 0"),
            ("stg_mode", "stg_mode must be one of"),
            ("tone", "tone_map_compression_ratio must be a number in [0, 1]"),
            ("cache", "static takes START,END,INTERVAL"),
            ("decode_t", "decode_timestep must be a number in [0, 1]"),
            ("downscale", "downscale_factor must be a number in (0, 1]"),
            ("bad_timesteps", "timesteps must be a non-empty list in (0, 1]"),
        )
    ),
    # the CLI's own flags
    Bad("flag-preset-unknown", "ltxv-7b is neither a pipeline config file nor a preset", flags=("--preset", "ltxv-7b")),
    Bad("flag-config-missing", "configs/none.yaml is neither", flags=("--pipeline-config", "configs/none.yaml")),
    Bad("flag-cond-frames-alone", "go together", flags=("--conditioning-start-frames", "0")),
    Bad("flag-cond-paths-alone", "go together", flags=("--conditioning-media-paths", "@img")),
    Bad(
        "flag-cond-counts",
        "got 2 media paths, 1 start frames, 2 strengths",
        flags=("--conditioning-media-paths", "@img", "@img", "--conditioning-start-frames", "0"),
    ),
    Bad(
        "flag-strengths-alone",
        "got 0 media paths, 0 start frames, 1 strengths",
        flags=("--conditioning-strengths", "1"),
    ),
    Bad("flag-height-word", "argument --height: invalid int value: 'tall'", flags=("--height", "tall")),
    Bad("flag-seed-float", "argument --seed: invalid int value: '1.5'", flags=("--seed", "1.5")),
    Bad("flag-dtype", "argument --dtype: invalid choice: 'float16'", flags=("--dtype", "float16")),
    Bad("flag-residency", "argument --residency: invalid choice: 'swap'", flags=("--residency", "swap")),
    Bad("flag-quantize", "argument --quantize: invalid choice: 'int4'", flags=("--quantize", "int4")),
    Bad("flag-max-memory", "not a memory size like 24G", flags=("--max-memory", "lots")),
    Bad("flag-unknown", "unrecognized arguments: --heigth", flags=("--heigth", "64")),
    Bad(
        "flag-two-recipes",
        "not allowed with argument",
        flags=("--preset", "ltxv-2b-0.9.6-dev", "--pipeline-config", "x.yaml"),
    ),
    Bad("flag-no-prompt", "the following arguments are required: --prompt", argv=("generate", "--height", "64")),
    Bad("flag-no-command", "the following arguments are required: COMMAND", argv=()),
    # outputs
    Bad("out-gif", "the output must end in .mp4, .safetensors or .png", flags=("--out", "@tmp/x.gif")),
    Bad("out-png-video", "a .png holds one frame, the video has 9", flags=("--out", "@tmp/x.png")),
    Bad("out-exists", "the file exists (give another name, or --overwrite", flags=("--out", "@vid9")),
    Bad("out-folder", "is a folder; give a file name", flags=("--out", "@folder")),
    Bad("out-under-file", "is a file, not a folder", flags=("--out", "@afile/x.mp4")),
    Bad("out-unwritable", "cannot write in /proc", flags=("--out", "/proc/ltxv-test/x.mp4")),
    Bad("out-odd-height", "needs an even height and width, got 96x63", flags=("--height", "63")),
    Bad("out-odd-width", "ask for a width of 94 or 96", flags=("--width", "95")),
    Bad("out-encoder-limit", "the H.264 encoder (libx264) refuses a 96x20000 video", flags=("--height", "20000")),
    Bad("output-path-file", "--output-path", argv=("generate", "--prompt", "p", "--output-path", "@afile")),
    # devices
    *(
        Bad(f"device-{name}", message, flags=("--device", dev), call=None)
        for name, dev, message in (
            ("cuda", "cuda", "device 'cuda':"),
            ("cuda-7", "cuda:7", "device 'cuda:7':"),
            ("mps", "mps", "device 'mps':"),
            ("tpu", "tpu", "device 'tpu' is not a device torch knows"),
            ("cpu-1", "cpu:1", "there is one CPU device"),
            ("meta", "meta", "ltxv runs on cpu, cuda, mps, xpu, not meta"),
            ("empty", "", "is not a device torch knows"),
        )
    ),
    # model files, through the CLI's flags and ltxv.load
    *(
        row
        for name, flag, value, message in (
            ("ckpt-missing", "checkpoint", "/nonexistent/model.safetensors", "no such file"),
            (
                "ckpt-gguf",
                "checkpoint",
                "@gguf",
                "this is a GGUF file (llama.cpp-style quantised weights), not a safetensors",
            ),
            ("ckpt-html", "checkpoint", "@html_st", "this is an HTML page"),
            ("ckpt-pickle", "checkpoint", "@pickle", "this is a pickled/zip torch checkpoint"),
            ("ckpt-empty", "checkpoint", "@empty_st", "this is an empty file"),
            ("ckpt-truncated", "checkpoint", "@truncated", "truncated: tensor"),
            ("ckpt-is-upsampler", "checkpoint", "@up", "checkpoint config has no 'transformer' section"),
            ("ckpt-unknown-name", "checkpoint", "ltxv-7b", "not a released checkpoint name"),
            ("up-is-checkpoint", "upsampler", "@ckpt", "upsampler config"),
            ("up-gguf", "upsampler", "@gguf", "this is a GGUF file"),
            ("up-channels", "upsampler", "@up32", "upsampler has 32 latent channels, the VAE 16"),
            ("te-pickle", "text_encoder", "@te_pickle", "holds only pytorch_model.bin, which is a pickle"),
            ("te-missing", "text_encoder", "/nonexistent/t5", "no such folder"),
            ("te-file", "text_encoder", "@afile", "not a text-encoder folder"),
            ("te-no-tokenizer", "text_encoder", "@te_notok", "no 'tokenizer/' inside"),
            ("te-bad-config", "text_encoder", "@te_badcfg", "not a readable T5 config"),
            ("te-missing-tensor", "text_encoder", "@te_missing", "the weights do not match its config.json"),
            ("te-wide", "text_encoder", "@te_wide", "the text encoder is 64 wide"),
        )
        for row in (
            Bad(f"{name}-cli", message, flags=(f"--{flag.replace('_', '-')}", value)),
            Bad(f"{name}-api", message, call=_load(**{flag: value})),
        )
    ),
    Bad("load-device", "device 'cuda:3':", call=_load(device="cuda:3"), param="device"),
    Bad("load-dtype", "dtype must be one of", call=_load(dtype="float32"), param="dtype"),
    Bad("load-residency", "residency must be one of", call=_load(residency="swap"), param="residency"),
    Bad("load-quantize", "quantize must be None or one of ['fp8']", call=_load(quantize="int4"), param="quantize"),
    # the Python API's other calls
    Bad(
        "generate-dict",
        "expected a GenerationRequest, got {'prompt': 'a kite'} (dict)",
        call=lambda e: e.pipes["base"].generate({"prompt": "a kite"}),
    ),
    Bad(
        "generate-string",
        "expected a GenerationRequest, got 'a kite' (str)",
        call=lambda e: e.pipes["base"].generate("a kite"),
    ),
    Bad("generate-none", "expected a GenerationRequest, got None", call=lambda e: e.pipes["base"].generate(None)),
    Bad(
        "decode-channels",
        "vae.decode: expected float normalised latents (B, 16, F, H, W)",
        call=lambda e: _vae(e).decode(_tensor(1, 3, 2, 2, 3), timestep=0.05),
    ),
    Bad(
        "decode-4d",
        "vae.decode: expected float normalised latents",
        call=lambda e: _vae(e).decode(_tensor(16, 2, 2, 3), timestep=0.05),
    ),
    Bad(
        "decode-int",
        "vae.decode: expected float normalised latents",
        call=lambda e: _vae(e).decode(_tensor(1, 16, 2, 2, 3, dtype=torch.int32)),
    ),
    Bad(
        "encode-shape",
        "vae.encode: expected a video tensor (B, 3, F, H, W)",
        call=lambda e: _vae(e).encode(_tensor(3, 9, 64, 96)),
    ),
    Bad("encode-frames", "frames must be 8k+1", call=lambda e: _vae(e).encode(_tensor(1, 3, 8, 64, 96))),
    Bad(
        "encode-uint8",
        "vae.encode: expected a float video in [-1, 1], got torch.uint8",
        call=lambda e: _vae(e).encode(_tensor(1, 3, 9, 64, 96, dtype=torch.uint8)),
    ),
    Bad(
        "encode-range",
        "video values must be finite and in [-1, 1], got [50, 50]",
        call=lambda e: _vae(e).encode(_tensor(1, 3, 9, 64, 96, value=50.0)),
    ),
    Bad(
        "encode-nan",
        "video values must be finite and in [-1, 1]",
        call=lambda e: _vae(e).encode(_tensor(1, 3, 9, 64, 96, value=NAN)),
    ),
    Bad(
        "upsampler-channels",
        "upsampler: expected latents (B, 16, F, H, W), got (1, 3, 2, 2, 3)",
        call=lambda e: _up(e)(_tensor(1, 3, 2, 2, 3)),
    ),
    Bad("upsampler-4d", "upsampler: expected latents (B, 16, F, H, W)", call=lambda e: _up(e)(_tensor(16, 2, 2, 3))),
    Bad(
        "upsampler-1x1x1",
        "upsampler: a latent grid of (1, 1, 1) is too small",
        call=lambda e: _up(e)(_tensor(1, 16, 1, 1, 1)),
    ),
    Bad(
        "upsampler-int",
        "upsampler: expected float latents",
        call=lambda e: _up(e)(_tensor(1, 16, 2, 2, 3, dtype=torch.int64)),
    ),
    Bad("preflight-device", "device 'tpu' is not a device torch knows", call=lambda e: _load(device="tpu")(e)),
    # LoRA and IC-LoRA control
    Bad("lora-missing", "no-such-lora.safetensors: no such file", {"recipe": "yaml:yaml_lora_missing"}),
    Bad(
        "lora-no-such-linear",
        "names no linear of the transformer",
        {"recipe": "yaml:yaml_lora_bad"},
        param="recipe.first_pass.loras[0]",
    ),
    Bad("lora-scale-inf", "loras[0].scale must be a finite number", {"recipe": "yaml:yaml_lora_inf"}),
    Bad("lora-flag-dora", "DoRA", flags=("--lora", "@lora_dora")),
    Bad("lora-flag-pickle", "pickled", flags=("--lora", "@pickle")),
    Bad("lora-flag-checkpoint", "no LoRA keys", flags=("--lora", "@allowed")),
    Bad("lora-flag-empty", "a LoRA needs a file", flags=("--lora", " ")),
    Bad(
        "control-too-short",
        "1 frame(s), but 9 are generated",
        {"conditioning": (ControlVideo("@img"),)},
        param="conditioning[0].media",
    ),
    Bad("control-corrupt", "control video (conditioning item 0)", {"conditioning": (ControlVideo("@corrupt_png"),)}),
    Bad(
        "control-passes",
        "conditioning[0].passes must name passes of the recipe",
        {"conditioning": (ControlVideo("@vid9", passes=(3,)),)},
        param="conditioning[0].passes",
    ),
    Bad("control-no-latents", "pass 0 starts from noise", {"conditioning": (ControlVideo(None),)}),
    Bad(
        "control-preprocess-alone",
        "--control-preprocess needs --control-video",
        flags=("--control-preprocess", "canny"),
    ),
    Bad(
        "detailer-one-pass",
        "refines a pass that starts from latents",
        flags=("--detailer-lora", "@lora_dora", "--preset", "ltxv-2b-0.9.6-distilled"),
    ),
    # long video and hybrid schedules
    *(
        Bad(f"long-{name}", message, {"num_frames": 161, **fields}, param=param)
        for name, fields, message, param in (
            (
                "tile-84",
                {"temporal_tile_frames": 84},
                "temporal_tile_frames must be a multiple of 8",
                "temporal_tile_frames",
            ),
            ("tile-8", {"temporal_tile_frames": 8}, "and at least 16, got 8", "temporal_tile_frames"),
            (
                "overlap-12",
                {"temporal_overlap_frames": 12},
                "temporal_overlap_frames must be a multiple of 8",
                "temporal_overlap_frames",
            ),
            (
                "overlap-tile",
                {"temporal_tile_frames": 48, "temporal_overlap_frames": 48},
                "temporal_overlap_frames (48) must be smaller than temporal_tile_frames (48)",
                "temporal_overlap_frames",
            ),
            ("strength", {"overlap_strength": 1.5}, "overlap_strength must be a number in [0, 1]", "overlap_strength"),
            ("adain-nan", {"adain_factor": NAN}, "adain_factor must be a number in [0, 1]", "adain_factor"),
            ("prompts", {"window_prompts": ("a", 3)}, "window_prompts must be a list of strings", "window_prompts"),
            ("v2v", {"num_frames": 1441, "input_media": V}, "a long video cannot be video-to-video", "input_media"),
            (
                "keyframe",
                {"temporal_tile_frames": 80, "conditioning": (C("@img", 16, 1.0),)},
                "a long video takes at most one conditioning item: an image at frame 0",
                "conditioning",
            ),
            (
                "control",
                {"temporal_tile_frames": 80, "conditioning": (ControlVideo(V),)},
                "a long video takes no IC-LoRA control video",
                "conditioning",
            ),
            (
                "video-cond",
                {"temporal_tile_frames": 80, "conditioning": (C(V, 0, 1.0),)},
                "a long video is conditioned on an image at frame 0, not on a video",
                "conditioning[0].media",
            ),
        )
    ),
    Bad("long-seconds-0", "--seconds must be > 0", flags=("--seconds", "0")),
    Bad("schedule-syntax", "transformer_schedule: entry '13b:x'", {"transformer_schedule": "13b:x,2b"}),
    Bad("schedule-json", "transformer_schedule: not valid JSON", {"transformer_schedule": "[[1"}),
    Bad(
        "schedule-unknown-label",
        "transformer_schedule: the schedule names '13b', but the pipeline's transformers are main",
        {"transformer_schedule": "13b:2,main"},
        param="transformer_schedule",
    ),
    *(
        row
        for name, values, message in (
            ("hybrid-incompatible", ("@wide_caption",), "has caption_channels=64, the main one 32"),
            ("hybrid-same-label", ("@ltxv-2b-a", "@ltxv-2b-b"), "two transformers are labelled '2b'"),
            ("hybrid-missing", ("/nonexistent/ltxv-13b.safetensors",), "no such file"),
        )
        for row in (
            Bad(f"{name}-cli", message, flags=tuple(x for v in values for x in ("--hybrid", v))),
            Bad(
                f"{name}-api",
                message,
                call=lambda e, values=values: _load(hybrid=[e.path(v) for v in values])(e),
                param=... if name == "hybrid-missing" else "hybrid",
            ),
        )
    ),
    # the other commands
    Bad("demo-out-dir-file", "is a file, not a folder", argv=("demo", "--out-dir", "@afile")),
    Bad("demo-device", "device 'tpu'", argv=("demo", "--out-dir", "@tmp/demo-out", "--device", "tpu")),
    Bad("make-tiny-file", "is a file, not a folder", argv=("make-tiny", "@afile")),
    Bad("make-tiny-unwritable", "cannot write in /proc", argv=("make-tiny", "/proc/ltxv-test-kit")),
)
