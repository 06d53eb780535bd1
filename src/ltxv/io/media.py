"""The reference CLI's input preprocessing (study §4.11; inference.py ``load_image_to_tensor_with_resize_and_crop``,
``load_media_file``; ``crf_compressor.py``), frame by frame: centre crop to the target aspect, a resize to the target
size for the video-to-video input only (conditioning media are resized later, by each pass), a 3x3 Gaussian blur and
a single-frame H.264 CRF 29 round trip (the degradation conditioning frames saw in training), then [-1, 1].

Every step reproduces the reference's arithmetic, so the result is bit-identical to it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ltxv.io.probe import probe_media
from ltxv.io.video import MediaError, read_image, read_video

CRF = 29


def crop_box(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred box with the target's aspect ratio (sizes truncated)."""
    aspect = target_width / target_height
    if width / height > aspect:
        new_width = int(height * aspect)
        left = (width - new_width) // 2
        return left, 0, left + new_width, height
    new_height = int(width / aspect)
    top = (height - new_height) // 2
    return 0, top, width, top + new_height


def center_crop(frame: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) -> (h, w, 3) cropped to the aspect ratio of ``height`` x ``width``."""
    left, top, right, bottom = crop_box(frame.shape[1], frame.shape[0], width, height)
    return frame[top:bottom, left:right]


def resize(frame: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 with Pillow's default filter (bicubic, antialiased), as the
    reference resizes the video-to-video input; torch's bicubic differs from it by 1 in ~0.5% of pixels."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame.cpu().numpy())).resize((width, height))
    return torch.from_numpy(np.asarray(image).copy())


def gaussian_blur(image: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(C, H, W) float -> 3x3 Gaussian blur with reflect padding, as torchvision's ``gaussian_blur(img, 3, sigma)``."""
    x = torch.linspace(-1.0, 1.0, 3, dtype=image.dtype, device=image.device)
    k1 = torch.exp(-0.5 * (x / sigma).pow(2))
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).expand(image.shape[0], 1, 3, 3)
    padded = F.pad(image[None], (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel, groups=image.shape[0])[0]


def crf_round_trip(image: torch.Tensor, crf: int = CRF) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> the frame after one H.264 intra encode at ``crf`` (libx264, preset veryfast,
    yuv420p) and decode, as ``crf_compressor.compress``: cropped to even H and W, quantised by truncation."""
    import av

    if crf == 0:  # the reference skips the round trip (and the even crop)
        return image
    even = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
    arr = (even * 255.0).byte().cpu().numpy()
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = arr.shape[0], arr.shape[1]
        out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")))
        out.mux(stream.encode())
    with av.open(io.BytesIO(buf.getvalue())) as inp:
        decoded = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    return torch.tensor(decoded, dtype=image.dtype, device=image.device) / 255.0


def preprocess_frame(
    frame: torch.Tensor, height: int, width: int, *, just_crop: bool = False, degrade: bool = True
) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float32 in [-1, 1]: crop to the target aspect, resize to ``height`` x ``width``
    unless ``just_crop``, then blur + CRF round trip when ``degrade`` (which crops odd sizes to even)."""
    frame = center_crop(frame, height, width)
    if not just_crop:
        frame = resize(frame, height, width)
    x = frame.permute(2, 0, 1).float().div(255)  # (3, h, w) in [0, 1], as torchvision's to_tensor
    if degrade:
        x = crf_round_trip(gaussian_blur(x).permute(1, 2, 0)).permute(2, 0, 1)
    return x * 2.0 - 1.0  # equal, for every k / 255, to the reference's x * 255 / 127.5 - 1


def num_media_frames(path: str | Path) -> int:
    """1 for an image; a video's frame count (by content, :func:`ltxv.io.probe.probe_media`)."""
    return probe_media(path).frames


def check_crop(
    path: str | Path, width: int, height: int, target_width: int, target_height: int, just_crop: bool
) -> None:
    """A ``width`` x ``height`` frame must crop to the target's aspect with at least one pixel a side (two when only
    cropped: the blur and the even crop of the CRF round trip need two)."""
    left, top, right, bottom = crop_box(width, height, target_width, target_height)
    if min(right - left, bottom - top) < (2 if just_crop else 1):
        raise MediaError(
            f"{path}: a {width}x{height} frame is too small to crop to the aspect of {target_width}x{target_height}"
        )


def load_media(
    path: str | Path, height: int, width: int, num_frames: int, *, preprocess: bool = True, just_crop: bool = False
) -> torch.Tensor:
    """An image, or the first ``num_frames`` frames of a video (told apart by content) -> (1, 3, F, h, w) float32 in
    [-1, 1], each frame through :func:`preprocess_frame` (``preprocess`` = blur + CRF round trip, always on in the
    reference)."""
    path = Path(path)
    info = probe_media(path)
    check_crop(path, info.width, info.height, width, height, just_crop)
    frames = read_video(path, max_frames=num_frames)[0] if info.kind == "video" else read_image(path)[None]
    out = [preprocess_frame(f, height, width, just_crop=just_crop, degrade=preprocess) for f in frames]
    return torch.stack(out, dim=1)[None]  # (1, 3, F, h, w)
