"""The reference CLI's media preprocessing (study §4.11): centre crop to the target aspect, resize (V2V input only),
Gaussian blur (3x3, sigma 1) and a single-frame H.264 CRF 29 round trip per frame, then [-1, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ltxv.io.video import VIDEO_SUFFIXES, MediaError, read_video

CRF = 29


def gaussian_blur(image: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(C, H, W) -> 3x3 Gaussian blur with reflect padding (torchvision's ``gaussian_blur(k=3, sigma)``)."""
    x = torch.arange(-1, 2, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (x / sigma) ** 2)
    k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None, :]).expand(image.shape[0], 1, 3, 3)
    padded = F.pad(image[None], (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, k2.to(image.dtype), groups=image.shape[0])[0]


def crf_round_trip(image: torch.Tensor, crf: int = CRF) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> the same frame after H.264 at ``crf`` (even-cropped), as conditioning images were
    degraded in training."""
    import av

    arr = (image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2] * 255.0).byte().cpu().numpy()
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = arr.shape[0], arr.shape[1]
        out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")))
        out.mux(stream.encode())
    with av.open(io.BytesIO(buf.getvalue())) as inp:
        frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    return torch.tensor(frame, dtype=image.dtype) / 255.0


def _crop_box(w: int, h: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    aspect = target_w / target_h
    if w / h > aspect:
        nw = int(h * aspect)
        x0 = (w - nw) // 2
        return x0, 0, x0 + nw, h
    nh = int(w / aspect)
    y0 = (h - nh) // 2
    return 0, y0, w, y0 + nh


def preprocess_frame(frame: np.ndarray, height: int, width: int, *, just_crop: bool, degrade: bool) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) in [-1, 1]: crop to the aspect, resize unless ``just_crop`` (Pillow's default
    resampling, as the reference), then blur + CRF round trip when ``degrade``."""
    from PIL import Image

    image = Image.fromarray(frame).crop(_crop_box(frame.shape[1], frame.shape[0], width, height))
    if not just_crop:
        image = image.resize((width, height))
    t = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    if degrade:
        t = crf_round_trip(gaussian_blur(t).permute(1, 2, 0)).permute(2, 0, 1)
    return t * 2.0 - 1.0


def num_media_frames(path: Path) -> int:
    return read_video(path)[0].shape[0] if path.suffix.lower() in VIDEO_SUFFIXES else 1


def load_media(
    path: Path, height: int, width: int, max_frames: int, *, preprocess: bool = True, just_crop: bool = False
) -> torch.Tensor:
    """An image or the first ``max_frames`` frames of a video -> (1, 3, F, h, w) in [-1, 1]."""
    frames, _ = read_video(path, max_frames=max_frames)
    if frames.shape[-1] != 3:
        raise MediaError(f"{path}: expected RGB frames")
    out = [preprocess_frame(f, height, width, just_crop=just_crop, degrade=preprocess) for f in frames]
    return torch.stack(out, dim=1)[None]
