"""Turning a request's media (paths or tensors) into pixel tensors at the padded target size, as the reference CLI does:
conditioning media are centre-cropped to the target aspect (not resized: each pass resizes), a video is trimmed to fit
(``min(len, F - start)`` rounded down to 8k+1), then everything is zero-padded like the output is (and later cropped).
Media given as tensors are taken as they are (already in [-1, 1]; no crop, blur or CRF round trip): each pass still
resizes them to its size."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ltxv.io.media import load_media, num_media_frames
from ltxv.pipelines.request import GenerationRequest, Media, RequestError
from ltxv.pipelines.stages import PassMedia

log = logging.getLogger(__name__)


def padding_for(height: int, width: int, padded_h: int, padded_w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom), the odd pixel going to the right/bottom (reference ``calculate_padding``)."""
    ph, pw = padded_h - height, padded_w - width
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def trimmed_length(start: int, length: int, num_frames: int) -> int:
    n = min(length, num_frames - start)
    return (n - 1) // 8 * 8 + 1


def _as_video(media: torch.Tensor, what: str) -> torch.Tensor:
    if media.ndim == 3:
        media = media.unsqueeze(1)  # (3, H, W) -> (3, 1, H, W)
    if media.ndim == 4:
        media = media.unsqueeze(0)
    if media.ndim != 5 or media.shape[:2] != (1, 3):
        raise RequestError(f"{what}: a media tensor must be (3, F, H, W) or (3, H, W), got {tuple(media.shape)}")
    return media.float()


def _load(
    media: Media, request: GenerationRequest, max_frames: int, padding: tuple[int, ...], *, just_crop: bool, what: str
) -> torch.Tensor:
    if isinstance(media, torch.Tensor):
        return _as_video(media, what)[:, :, :max_frames]
    tensor = load_media(
        Path(media),
        request.height,
        request.width,
        max_frames,
        preprocess=request.media_preprocess,
        just_crop=just_crop,
    )
    return F.pad(tensor, padding)


def _length(media: Media) -> int:
    if isinstance(media, torch.Tensor):
        return media.shape[1] if media.ndim == 4 else 1
    return num_media_frames(Path(media))


def load_request_media(request: GenerationRequest, height: int, width: int, num_frames: int) -> PassMedia:
    padding = padding_for(request.height, request.width, height, width)
    items = []
    for i, c in enumerate(request.conditioning):
        what = f"conditioning item {i}"
        length = _length(c.media)
        n = trimmed_length(c.frame, length, request.num_frames)
        if n < length:
            log.warning("%s: trimming the conditioning video from %d to %d frames to fit", what, length, n)
        if n > 1 and c.frame % 8:
            raise RequestError(f"{what}: a conditioning video must start at a multiple of 8, got frame {c.frame}")
        media = _load(c.media, request, n, padding, just_crop=True, what=what)
        if media.shape[2] % 8 != 1:
            raise RequestError(f"{what}: a conditioning video needs 8k+1 frames, got {media.shape[2]}")
        items.append((media, c.frame, c.strength))
    source = None
    if request.input_media is not None:
        source = _load(request.input_media, request, num_frames, padding, just_crop=False, what="input media")
        if source.shape[2] < num_frames:
            raise RequestError(
                f"the input video has {source.shape[2]} frames but {num_frames} are generated; ask for "
                f"{(source.shape[2] - 1) // 8 * 8 + 1} frames or fewer"
            )
        source = source[:, :, :num_frames]
    return PassMedia(conditioning=tuple(items), source=source)
