"""Media I/O: the writers read back with PyAV, atomic writes, clear errors for bad input; and the preprocessing
against the reference's own ``load_image_to_tensor_with_resize_and_crop`` / ``load_media_file`` /
``get_media_num_frames`` / ``crf_compressor.compress``, bit for bit."""

from __future__ import annotations

import ast
import importlib.util
import types
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from ltxv.io import video as video_io
from ltxv.io.media import (
    center_crop,
    crf_round_trip,
    gaussian_blur,
    load_media,
    num_media_frames,
    preprocess_frame,
    resize,
)
from ltxv.io.video import (
    MediaError,
    count_video_frames,
    read_image,
    read_video,
    save_output,
    to_uint8,
    write_mp4,
    write_png,
    write_tensors,
)


def _gradient_video(f: int, h: int, w: int) -> torch.Tensor:
    """(F, H, W, 3) float in [0, 1]: smooth moving colour ramps, so codec errors stay small."""
    t = torch.linspace(0, 1, f)[:, None, None]
    y = torch.linspace(0, 1, h)[None, :, None]
    x = torch.linspace(0, 1, w)[None, None, :]
    r = (0.8 * x + 0.1 * t).expand(f, h, w)
    g = y.expand(f, h, w)
    b = 0.5 + 0.4 * torch.sin(6 * x + 4 * y + 3 * t)
    return torch.stack([r, g, b], dim=-1)


def _textured(h: int, w: int, seed: int) -> torch.Tensor:
    """(H, W, 3) float in [0, 1]: a gradient plus noise, so crops, blur and the codec all change something."""
    gen = torch.Generator().manual_seed(seed)
    return 0.8 * _gradient_video(1, h, w)[0] + 0.2 * torch.rand(h, w, 3, generator=gen)


def _decode(path: Path) -> tuple[np.ndarray, Any]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
        return frames, (s.codec_context.name, s.pix_fmt, s.width, s.height, s.average_rate)


# --- writers ------------------------------------------------------------------------------------------------------


def test_mp4_reads_back_with_pyav(tmp_path: Path) -> None:
    video = _gradient_video(9, 64, 96)
    path = save_output(tmp_path / "v.mp4", video, fps=24)
    frames, meta = _decode(path)
    assert meta == ("h264", "yuv420p", 96, 64, 24) and frames.shape == (9, 64, 96, 3)
    err = np.abs(frames.astype(int) - to_uint8(video).astype(int))
    assert err.mean() < 4.0  # measured 3.1 (chroma subsampling on colour ramps + CRF 25)
    gray = np.repeat(to_uint8(video)[..., 1:2], 3, axis=-1)  # no chroma: only the codec's error is left
    back, fps = read_video(write_mp4(tmp_path / "g.mp4", gray, 30))
    assert fps == 30.0 and np.abs(back.numpy().astype(int) - gray).max() <= 6  # measured 4
    assert float(_decode(write_mp4(tmp_path / "n.mp4", gray[:2], 23.976))[1][4]) == 23.976


def test_mp4_of_the_same_frames_is_the_same_file(tmp_path: Path) -> None:
    """libx264 with its CPU-specific choices wrote 3 different files in 60 writes of one clip on this busy machine;
    the writer asks for ``cpu-independent`` encoding so the bytes depend on the frames alone."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(17, 8, 12, 3, generator=g)  # 8x8-pixel blocks of random colour: every macroblock differs
    frames = to_uint8(blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))
    files = {write_mp4(tmp_path / f"{i}.mp4", frames, 24).read_bytes() for i in range(20)}
    assert len(files) == 1


def test_mp4_odd_size_is_padded_by_edge_repeat(tmp_path: Path) -> None:
    frames = np.repeat(to_uint8(_gradient_video(3, 33, 47))[..., :2], (2, 1), axis=-1)  # yellow: little chroma
    back, meta = _decode(write_mp4(tmp_path / "odd.mp4", frames, 8))
    assert meta[2:4] == (48, 34) and back.shape == (3, 34, 48, 3)
    assert np.abs(back[:, :33, :47].astype(int) - frames).mean() < 4
    assert np.abs(back[:, 33].astype(int) - back[:, 32]).max() <= 6  # repeated last row, up to codec error
    assert np.abs(back[:, :, 47].astype(int) - back[:, :, 46]).max() <= 6


def test_png_is_truncated_like_the_reference(tmp_path: Path) -> None:
    image = _textured(20, 30, seed=1)
    image[0, 0] = torch.tensor([0.999, 1.0, 0.0])
    back = read_image(save_output(tmp_path / "f.png", image[None]))
    assert torch.equal(back, torch.from_numpy((image.numpy() * 255).astype(np.uint8)))
    assert back[0, 0].tolist() == [254, 255, 0]  # truncation, not rounding
    assert torch.equal(read_image(write_png(tmp_path / "u.png", back)), back)  # uint8 passes through


def test_safetensors_round_trip(tmp_path: Path) -> None:
    video = _textured(8, 12, seed=2)[None].expand(3, -1, -1, -1).to(torch.bfloat16)
    latents = torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(0))
    st = load_file(str(save_output(tmp_path / "o.safetensors", video, latents)))
    assert st["video"].dtype == torch.float32 and torch.equal(st["video"], video.float())
    assert torch.equal(st["latents"], latents)
    with safe_open(str(write_tensors(tmp_path / "v.safetensors", video)), "pt") as f:
        assert list(f.keys()) == ["video"]


def test_output_errors_and_no_stray_files(tmp_path: Path) -> None:
    video = _gradient_video(2, 8, 8)
    with pytest.raises(ValueError, match=r"a PNG holds one frame, the video has 2; use \.mp4"):
        save_output(tmp_path / "x.png", video)
    with pytest.raises(ValueError, match=r"unsupported output type '\.gif'"):
        save_output(tmp_path / "x.gif", video)
    with pytest.raises(
        ValueError, match=r"expected \(F, H, W, 3\) uint8 RGB or a float tensor in \[0, 1\], got float32"
    ):
        write_mp4(tmp_path / "x.mp4", video.numpy(), 24)
    with pytest.raises(ValueError, match="fps must be positive"):
        write_mp4(tmp_path / "x.mp4", to_uint8(video), 0)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = to_uint8(_gradient_video(4, 16, 16))
    good = write_mp4(tmp_path / "v.mp4", frames, 24)
    before = good.read_bytes()
    original = av.VideoFrame.from_ndarray
    count = 0

    def fail_third(*args: Any, **kwargs: Any) -> av.VideoFrame:
        nonlocal count
        count += 1
        if count in (3, 6):  # the third frame of each write
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", fail_third)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(tmp_path / "v.mp4", frames, 24)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(tmp_path / "new" / "w.mp4", frames, 24)
    assert count == 6  # both writes got under way before failing
    # The folder the second write made is gone with its temporary file.
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["v.mp4"]
    assert good.read_bytes() == before


# --- readers ------------------------------------------------------------------------------------------------------


def test_read_video_frames_and_fps(tmp_path: Path) -> None:
    frames = to_uint8(_gradient_video(7, 32, 48))
    path = write_mp4(tmp_path / "v.mp4", frames, 25)
    video, fps = read_video(path)
    assert video.dtype == torch.uint8 and video.shape == (7, 32, 48, 3) and fps == 25.0
    assert torch.equal(read_video(path, max_frames=3)[0], video[:3])
    assert count_video_frames(path) == 7 and num_media_frames(path) == 7
    with pytest.raises(ValueError, match="max_frames must be at least 1"):
        read_video(path, max_frames=0)


def test_unreadable_media_raise_media_error_naming_the_path(tmp_path: Path) -> None:
    bad_mp4 = tmp_path / "clip.mp4"
    bad_mp4.write_bytes(b"this is not a video at all" * 10)
    bad_png = tmp_path / "still.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then garbage
    for call in (read_video, count_video_frames, num_media_frames):
        with pytest.raises(MediaError, match=r"clip\.mp4: not a readable video"):
            call(bad_mp4)
    with pytest.raises(MediaError, match=r"still\.png: not a readable image"):
        load_media(bad_png, 32, 32, 1)
    with pytest.raises(MediaError, match=r"none\.png: no such file"):
        num_media_frames(tmp_path / "none.png")
    with pytest.raises(MediaError, match=r"none\.mp4: no such file"):
        load_media(tmp_path / "none.mp4", 32, 32, 9)
    with pytest.raises(MediaError, match="not a file"):
        read_image(tmp_path)
    assert issubclass(MediaError, ValueError)


def test_png_decoded_by_pyav_too(tmp_path: Path) -> None:
    """Pillow reads stills (like the reference); PyAV's PNG decoder agrees with it."""
    png = write_png(tmp_path / "a.png", _textured(10, 14, seed=3))
    assert torch.equal(read_video(png)[0][0], read_image(png))


# --- preprocessing against the reference -------------------------------------------------------------------------


def _torchvision_functional() -> Any:
    """torchvision's ``to_tensor`` / ``gaussian_blur`` (what the reference calls), or where torchvision is not
    installed, a transcription of the two from torchvision's source (transforms/functional.py,
    _functional_tensor.py)."""
    try:
        import torchvision.transforms.functional as tvf

        return tvf
    except ImportError:
        pass

    def to_tensor(pic: Any) -> torch.Tensor:
        img = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(pic.size[1], pic.size[0], len(pic.getbands()))
        return img.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)

    def gaussian_blur(img: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
        half = (kernel_size - 1) * 0.5
        x = torch.linspace(-half, half, steps=kernel_size, dtype=img.dtype)
        pdf = torch.exp(-0.5 * (x / sigma).pow(2))
        k1 = pdf / pdf.sum()
        kernel = torch.mm(k1[:, None], k1[None, :]).expand(img.shape[-3], 1, kernel_size, kernel_size)
        padded = F.pad(img.unsqueeze(0), [kernel_size // 2] * 4, mode="reflect")
        return F.conv2d(padded, kernel, groups=img.shape[-3]).squeeze(0)

    return types.SimpleNamespace(to_tensor=to_tensor, gaussian_blur=gaussian_blur)


@pytest.fixture(scope="module")
def reference() -> types.SimpleNamespace:
    """The reference CLI's media functions, compiled from its source (importing ``ltx_video.inference`` needs
    torchvision, which is not a test dependency), with their real collaborators: Pillow, imageio, crf_compressor."""
    spec = importlib.util.find_spec("ltx_video")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the reference ltx_video package is not installed")
    import imageio
    import ltx_video.pipelines.crf_compressor as crf_compressor
    from PIL import Image

    source = (Path(next(iter(spec.submodule_search_locations))) / "inference.py").read_text()
    names = ("load_image_to_tensor_with_resize_and_crop", "load_media_file", "get_media_num_frames")
    nodes = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace: dict[str, Any] = {"Image": Image, "imageio": imageio, "torch": torch, "crf_compressor": crf_compressor}
    namespace.update(TVF=_torchvision_functional(), Union=Any, Optional=Any, List=list)
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "ltx_video/inference.py", "exec"), namespace)
    return types.SimpleNamespace(compress=crf_compressor.compress, **{n: namespace[n] for n in names})


def test_crf_round_trip_equals_reference_compress(reference: types.SimpleNamespace) -> None:
    for h, w, seed in ((64, 96, 0), (65, 97, 1), (31, 18, 2)):  # odd sizes: both crop to even
        image = _textured(h, w, seed)
        ours = crf_round_trip(image)
        assert ours.shape == (h // 2 * 2, w // 2 * 2, 3)
        assert torch.equal(ours, reference.compress(image)) and torch.equal(ours, crf_round_trip(image))
        assert 0 < (ours - image[: h // 2 * 2, : w // 2 * 2]).abs().mean() < 0.1  # lossy, but close
    image = _textured(9, 9, 0)
    assert crf_round_trip(image, crf=0) is image and reference.compress(image, crf=0) is image


def test_gaussian_blur_equals_torchvision_and_closed_form() -> None:
    image = _textured(13, 17, 4).permute(2, 0, 1)
    assert torch.equal(gaussian_blur(image), _torchvision_functional().gaussian_blur(image, 3, 1.0))
    impulse = torch.zeros(1, 5, 5)
    impulse[0, 2, 2] = 1.0
    k = torch.exp(-0.5 * torch.tensor([1.0, 0.0, 1.0]))
    k = k / k.sum()
    torch.testing.assert_close(gaussian_blur(impulse)[0, 1:4, 1:4], k[:, None] * k[None, :], rtol=0, atol=1e-7)
    torch.testing.assert_close(gaussian_blur(torch.full((3, 4, 4), 0.3)), torch.full((3, 4, 4), 0.3))


# (target height, width, just_crop): landscape and portrait targets, crops that end odd (then cropped to even by
# the round trip), upscaling and downscaling resizes.
CASES = [(64, 96, False), (64, 96, True), (96, 64, False), (96, 64, True), (50, 70, True), (128, 160, False)]


@pytest.mark.parametrize(("height", "width", "just_crop"), CASES)
def test_load_image_equals_reference(
    reference: types.SimpleNamespace, tmp_path: Path, height: int, width: int, just_crop: bool
) -> None:
    png = write_png(tmp_path / "in.png", _textured(101, 203, seed=5))
    expected = reference.load_image_to_tensor_with_resize_and_crop(str(png), height, width, just_crop=just_crop)
    ours = load_media(png, height, width, 1, just_crop=just_crop)
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    assert torch.equal(ours, expected)
    padding = (3, 4, 1, 2)  # what load_media_file adds; our pipeline pads after load_media
    assert torch.equal(F.pad(ours, padding), reference.load_media_file(str(png), height, width, 1, padding, just_crop))


def test_load_jpeg_equals_reference(reference: types.SimpleNamespace, tmp_path: Path) -> None:
    from PIL import Image

    jpg = tmp_path / "in.jpg"
    Image.fromarray(to_uint8(_textured(90, 120, seed=6))).save(jpg, quality=80)
    expected = reference.load_image_to_tensor_with_resize_and_crop(str(jpg), 64, 64, just_crop=False)
    assert torch.equal(load_media(jpg, 64, 64, 1), expected)


@pytest.mark.parametrize(("height", "width", "just_crop", "max_frames"), [(64, 96, False, 9), (48, 48, True, 20)])
def test_load_video_equals_reference(
    reference: types.SimpleNamespace, tmp_path: Path, height: int, width: int, just_crop: bool, max_frames: int
) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="the reference reads video through imageio's ffmpeg plugin")
    clip = _gradient_video(11, 60, 90) * 0.8 + 0.2 * torch.rand(11, 60, 90, 3, generator=torch.Generator())
    mp4 = write_mp4(tmp_path / "in.mp4", to_uint8(clip), 24)
    assert num_media_frames(mp4) == reference.get_media_num_frames(str(mp4)) == 11
    expected = reference.load_media_file(str(mp4), height, width, max_frames, (0, 0, 0, 0), just_crop)
    ours = load_media(mp4, height, width, max_frames, just_crop=just_crop)
    assert ours.shape == expected.shape == (1, 3, min(11, max_frames), *expected.shape[-2:])
    assert torch.equal(ours, expected)


def test_preprocess_steps() -> None:
    frame = to_uint8(_textured(40, 100, seed=7))
    frame_t = torch.from_numpy(frame)
    assert torch.equal(center_crop(frame_t, 32, 32), frame_t[:, 30:70])  # the largest centred square
    assert center_crop(frame_t, 100, 10).shape == (40, 4, 3)  # int(40 * 0.1) = 4 wide
    assert resize(frame_t, 20, 50).shape == (20, 50, 3) and resize(frame_t, 20, 50).dtype == torch.uint8
    raw = preprocess_frame(frame_t, 32, 32, degrade=False)
    expected = torch.from_numpy(frame[:, 30:70]).permute(2, 0, 1).float() / 255 * 255.0 / 127.5 - 1.0
    assert torch.equal(preprocess_frame(frame_t, 32, 32, just_crop=True, degrade=False), expected)
    assert raw.shape == (3, 32, 32) and raw.min() >= -1 and raw.max() <= 1
    degraded = preprocess_frame(frame_t, 32, 32)
    levels = torch.arange(256, dtype=torch.float32).div(255)
    assert torch.equal(levels * 2.0 - 1.0, levels * 255.0 / 127.5 - 1.0)  # the reference's form, for every level
    assert 0.005 < (degraded - raw).abs().mean() < 0.2


def test_load_media_without_preprocess_and_tiny_crops(tmp_path: Path) -> None:
    png = write_png(tmp_path / "in.png", _textured(30, 40, seed=8))
    image = read_image(png)
    plain = load_media(png, 30, 40, 1, preprocess=False, just_crop=True)
    assert torch.equal(plain[0, :, 0], image.permute(2, 0, 1).float() / 255 * 255.0 / 127.5 - 1.0)
    with pytest.raises(MediaError, match=r"in\.png: a 40x30 frame is too small to crop to the aspect of 1x100"):
        load_media(png, 100, 1, 1, just_crop=True)


def test_video_suffixes_follow_the_reference() -> None:
    for name in ("a.mp4", "a.MOV", "a.avi", "a.mkv"):
        assert video_io.is_video(name)
    for name in ("a.png", "a.jpg", "a.gif"):
        assert not video_io.is_video(name)
