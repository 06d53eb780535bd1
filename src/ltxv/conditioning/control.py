"""Making IC-LoRA control videos from ordinary videos.

Canny edges are built in, as the LTX-Video Trainer computes them for its canny IC-LoRA dataset
(``scripts/compute_condition.py``): OpenCV's ``Canny`` on the 8-bit grey frame with thresholds 100 / 200, the edge map
repeated on three channels (0 or 255). Depth and pose control videos come ready-made from their own models: the
official workflows use DepthCrafter (depth) and DWPose (``DWPreprocessor``: body, hands and face) for the
``LTX-Video-ICLoRA-{depth,pose}-13b-0.9.7`` LoRAs; Depth Anything (V2) and OpenPose renderings are common too.
"""

from __future__ import annotations

import numpy as np
import torch

CANNY_THRESHOLDS = (100, 200)  # the Trainer's cv2.Canny(gray_u8, 100, 200)


def canny(video: torch.Tensor, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> torch.Tensor:
    """Video (B, 3, F, H, W) in [-1, 1] -> its Canny edge video, same shape, -1 (no edge) or 1 (edge).

    Frames are quantised to 8 bits first (exact for frames read from a file: they are k / 255 steps)."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a dependency of ltxv, missing only in a broken install
        raise RuntimeError("canny control videos need OpenCV: pip install opencv-python-headless") from e
    b, c, f, h, w = video.shape
    if c != 3:
        raise ValueError(f"canny takes RGB video (B, 3, F, H, W), got {tuple(video.shape)}")
    u8 = ((video.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    frames = u8.permute(0, 2, 3, 4, 1).reshape(b * f, h, w, 3).numpy()  # (B*F, H, W, 3) RGB
    edges = np.stack([cv2.Canny(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), *thresholds) for x in frames])  # 0 / 255
    out = torch.from_numpy(edges).reshape(b, f, h, w).unsqueeze(1).expand(b, 3, f, h, w)
    return (out.to(video.dtype) / 127.5 - 1.0).to(video.device)
