"""The T5 wrapper against the reference's prompt encoding, and media I/O: writers, readers, the CRF preprocessing."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ltxv.io.media import crf_round_trip, gaussian_blur, load_media
from ltxv.io.video import MediaError, read_video, save_output, write_mp4, write_png
from ltxv.testing.text import write_tiny_text_encoder
from ltxv.text.t5 import TextEncoder

ref_pipe = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_text_encoder(tmp_path_factory.mktemp("t5"), d_model=32, seed=0)


def test_encode_matches_reference_encode_prompt(t5_dir: Path) -> None:
    import transformers

    ours = TextEncoder.from_pretrained(t5_dir)
    pipe = ref_pipe.LTXVideoPipeline.__new__(ref_pipe.LTXVideoPipeline)  # only encode_prompt's collaborators
    pipe.text_encoder = transformers.T5EncoderModel.from_pretrained(str(t5_dir), subfolder="text_encoder").eval()
    pipe.tokenizer = transformers.AutoTokenizer.from_pretrained(str(t5_dir), subfolder="tokenizer")
    pipe.transformer = None
    with torch.no_grad():
        pe, pm, ne, nm = pipe.encode_prompt(
            "  a red fox runs through snow  ", True, negative_prompt="blurry, dark", device="cpu"
        )
    emb, mask = ours.encode(["  a red fox runs through snow  "])
    nemb, nmask = ours.encode(["blurry, dark"])
    assert emb.shape == (1, 256, 32) and int(mask.sum()) > 1
    assert torch.equal(mask, pm) and torch.equal(nmask, nm)
    assert torch.equal(emb, pe) and torch.equal(nemb, ne)
    assert not torch.equal(emb, nemb)


def test_prompt_type_and_folder_errors(t5_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="a prompt must be a string, got int"):
        TextEncoder.from_pretrained(t5_dir).encode([3])  # type: ignore[list-item]
    from ltxv.weights.errors import LoadError

    with pytest.raises(LoadError, match="not a text-encoder folder"):
        TextEncoder.from_pretrained(tmp_path)


def test_tiny_text_encoder_is_deterministic_and_leaves_global_rng(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    a = write_tiny_text_encoder(tmp_path / "a", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = write_tiny_text_encoder(tmp_path / "b", seed=3)
    wa = load_file(str(a / "text_encoder" / "model.safetensors"))
    wb = load_file(str(b / "text_encoder" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_crf_round_trip_equals_reference() -> None:
    crf = pytest.importorskip("ltx_video.pipelines.crf_compressor")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(65, 97, 3, generator=g)  # odd sizes: both crop to even
    assert torch.equal(crf_round_trip(image), crf.compress(image))


def test_gaussian_blur_closed_form() -> None:
    image = torch.zeros(1, 5, 5)
    image[0, 2, 2] = 1.0
    k = torch.exp(-0.5 * torch.tensor([1.0, 0.0, 1.0]))
    k = k / k.sum()
    assert torch.allclose(gaussian_blur(image)[0, 1:4, 1:4], k[:, None] * k[None, :], atol=1e-7)
    assert torch.allclose(gaussian_blur(torch.ones(3, 4, 4)), torch.ones(3, 4, 4))


def test_mp4_png_safetensors_writers(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    video = torch.rand(9, 64, 96, 3, generator=g)
    latents = torch.randn(1, 16, 2, 2, 3)
    mp4 = save_output(tmp_path / "v.mp4", video, latents, fps=24)
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        assert (s.codec_context.name, s.pix_fmt, s.width, s.height, float(s.average_rate)) == (
            "h264",
            "yuv420p",
            96,
            64,
            24.0,
        )
    assert len(frames) == 9
    st = load_file(str(save_output(tmp_path / "v.safetensors", video, latents)))
    assert torch.equal(st["video"], video) and torch.equal(st["latents"], latents)
    png = save_output(tmp_path / "f.png", video[:1])
    back, _ = read_video(png)
    assert np.array_equal(back[0], (video[0].numpy() * 255).astype(np.uint8))  # truncation, as the reference
    with pytest.raises(ValueError, match="a PNG holds one frame"):
        save_output(tmp_path / "x.png", video)
    with pytest.raises(ValueError, match=r"unsupported output type '\.gif'"):
        save_output(tmp_path / "x.gif", video)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "v.mp4", "v.safetensors"]  # no partial files


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever PyAV raises for a frame of the wrong shape
        write_mp4(tmp_path / "bad.mp4", np.zeros((2, 8, 8, 4), dtype=np.uint8), 24)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_missing_media(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(MediaError, match=r"clip\.mp4: not a readable image or video"):
        read_video(bad)
    with pytest.raises(MediaError, match="no such file"):
        read_video(tmp_path / "none.png")


def test_load_media_crops_resizes_and_degrades(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    png = write_png(tmp_path / "in.png", torch.rand(100, 200, 3, generator=g))
    raw = load_media(png, 64, 96, 1, preprocess=False, just_crop=False)
    assert raw.shape == (1, 3, 1, 64, 96) and raw.min() >= -1 and raw.max() <= 1
    cropped = load_media(png, 64, 96, 1, preprocess=False, just_crop=True)
    assert cropped.shape == (1, 3, 1, 100, 150)  # centre crop to 3:2, no resize
    degraded = load_media(png, 64, 96, 1, preprocess=True, just_crop=False)
    assert 0 < (degraded - raw).abs().mean() < 0.5
