"""Turning a request's media (paths or tensors) into pixel tensors at the padded target size, as the reference CLI does:
conditioning media are centre-cropped to the target aspect (not resized: each pass resizes), a video is trimmed to fit
(``min(len, F - start)`` rounded down to 8k+1), then everything is zero-padded like the output is (and later cropped).
Media given as tensors are taken as they are (no crop, blur or CRF round trip): each pass still resizes them to its
size. A tensor must be a float (3, F, H, W) or (3, H, W), finite and in [-1, 1]; nothing is rescaled.

:func:`plan_media` makes every check the loading relies on from the files' probes (kind, frame count, size) and the
tensors' shapes, so a request's media are known to fit before any model is loaded; :func:`load_request_media` then
loads what the plan says.

IC-LoRA control videos (:class:`ControlVideo`) are read like the video-to-video source: centre-cropped to the target
aspect and resized to the requested size (no blur or CRF round trip: they are references, not frames to imitate),
frame for frame (no frame-rate conversion), trimmed to the generated frame count (a warning) or refused when shorter,
optionally turned into Canny edges, then padded with black (no edge, no depth, no pose) like the output."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ltxv.io.media import check_crop, load_media
from ltxv.io.probe import probe_media
from ltxv.io.video import MediaError
from ltxv.pipelines.request import ConditioningMedia, ControlVideo, GenerationRequest, Media, RequestError
from ltxv.pipelines.stages import PassControl, PassMedia

log = logging.getLogger(__name__)


def padding_for(height: int, width: int, padded_h: int, padded_w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom), the odd pixel going to the right/bottom (reference ``calculate_padding``)."""
    ph, pw = padded_h - height, padded_w - width
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def trimmed_length(start: int, length: int, num_frames: int) -> int:
    n = min(length, num_frames - start)
    return (n - 1) // 8 * 8 + 1


def check_media_tensor(media: torch.Tensor, what: str, param: str) -> int:
    """A media tensor's frame count, after checking it is what the pipeline takes: float, (3, F, H, W) or (3, H, W)
    (a leading batch of 1 allowed), non-empty, finite, in [-1, 1]. Raises :class:`RequestError` saying what was
    expected."""
    shape = tuple(media.shape)
    if not ((len(shape) in (3, 4) and shape[0] == 3) or (len(shape) == 5 and shape[:2] == (1, 3))):
        raise RequestError(
            f"{what}: a media tensor must be (3, F, H, W) or (3, H, W) RGB, got shape {shape}", param=param
        )
    if media.numel() == 0:
        raise RequestError(f"{what}: the media tensor is empty, shape {shape}", param=param)
    if not media.is_floating_point():
        hint = " (for 0-255 pixels: x.float() / 127.5 - 1)" if media.dtype == torch.uint8 else ""
        raise RequestError(f"{what}: a media tensor must be float in [-1, 1], got {media.dtype}{hint}", param=param)
    if not bool(torch.isfinite(media).all()):
        raise RequestError(f"{what}: the media tensor has NaN or infinite values", param=param)
    low, high = (float(v) for v in torch.aminmax(media.detach()))
    if low < -1.0 or high > 1.0:
        hint = " (0-255 pixels? x / 127.5 - 1; [0, 1]? x * 2 - 1)" if high > 1.0 and low >= 0.0 else ""
        raise RequestError(
            f"{what}: media tensor values must lie in [-1, 1], got [{low:g}, {high:g}]{hint}; nothing is rescaled",
            param=param,
        )
    return shape[-3] if len(shape) >= 4 else 1


@dataclass(frozen=True)
class MediaPlan:
    """The frames each medium contributes, as the loading will take them."""

    conditioning: tuple[tuple[int, int], ...] = ()  # (frames it has, frames taken after trimming) per media item
    source: int | None = None  # frames of the video-to-video source taken (the padded frame count), None without one
    control: tuple[int | None, ...] = ()  # frames each control video has (None: a pass's own latents)


def media_items(request: GenerationRequest) -> list[tuple[int, ConditioningMedia]]:
    """The request's conditioning media (not its control videos), with their indices in ``request.conditioning``."""
    return [(i, c) for i, c in enumerate(request.conditioning) if isinstance(c, ConditioningMedia)]


def control_items(request: GenerationRequest) -> list[tuple[int, ControlVideo]]:
    return [(i, c) for i, c in enumerate(request.conditioning) if isinstance(c, ControlVideo)]


def _frames_of(media: Media, request: GenerationRequest, what: str, param: str, *, just_crop: bool) -> int:
    """The frame count of a medium, after checking it decodes and crops to the request's aspect."""
    if isinstance(media, torch.Tensor):
        return check_media_tensor(media, what, param)
    try:
        info = probe_media(Path(media))
        check_crop(info.path, info.width, info.height, request.width, request.height, just_crop)
    except MediaError as e:
        raise RequestError(f"{what}: {e}", param=param, code="media") from None
    return info.frames


def plan_media(request: GenerationRequest, height: int, width: int, num_frames: int) -> MediaPlan:
    """Check the request's media against the padded size ``height`` x ``width`` x ``num_frames`` (files probed, not
    loaded); raise :class:`RequestError` naming the item and the problem."""
    items = []
    for i, c in media_items(request):
        what, param = f"conditioning item {i}", f"conditioning[{i}].media"
        length = _frames_of(c.media, request, what, param, just_crop=True)
        n = trimmed_length(c.frame, length, request.num_frames)
        if n > 1 and c.frame % 8:
            raise RequestError(
                f"{what}: a conditioning video must start at a multiple of 8, got frame {c.frame}",
                param=f"conditioning[{i}].frame",
            )
        items.append((length, n))
    source = None
    if request.input_media is not None:
        length = _frames_of(request.input_media, request, "input media", "input_media", just_crop=False)
        if length < num_frames:
            kind = "image" if length == 1 else f"video has {length} frames"
            raise RequestError(
                f"the input {kind} but {num_frames} frames are generated; video-to-video needs a source of at least "
                f"as many frames (ask for {(length - 1) // 8 * 8 + 1} frames or fewer)",
                param="input_media",
            )
        source = num_frames
    controls: list[int | None] = []
    for i, c in control_items(request):
        what, param = f"control video (conditioning item {i})", f"conditioning[{i}].media"
        if c.media is None:
            controls.append(None)
            continue
        length = _frames_of(c.media, request, what, param, just_crop=False)
        if length < num_frames:
            raise RequestError(
                f"{what}: {length} frame(s), but {num_frames} are generated; give a control video at least as long, or "
                f"ask for {(length - 1) // 8 * 8 + 1} frames or fewer",
                param=param,
            )
        controls.append(length)
    return MediaPlan(conditioning=tuple(items), source=source, control=tuple(controls))


def _load(
    media: Media, request: GenerationRequest, max_frames: int, padding: tuple[int, ...], *, just_crop: bool
) -> torch.Tensor:
    if isinstance(media, torch.Tensor):
        while media.ndim < 5:
            media = media.unsqueeze(1 if media.ndim == 3 else 0)  # (3, H, W) -> (3, 1, H, W) -> (1, 3, F, H, W)
        return media.float()[:, :, :max_frames]
    tensor = load_media(
        Path(media),
        request.height,
        request.width,
        max_frames,
        preprocess=request.media_preprocess,
        just_crop=just_crop,
    )
    return F.pad(tensor, padding)


def load_request_media(
    request: GenerationRequest, height: int, width: int, num_frames: int, plan: MediaPlan | None = None
) -> PassMedia:
    """The request's media as pixel tensors (``plan``: the checks of :func:`plan_media`, made here if not given)."""
    plan = plan or plan_media(request, height, width, num_frames)
    padding = padding_for(request.height, request.width, height, width)
    items = []
    for (i, c), (length, n) in zip(media_items(request), plan.conditioning):
        if n < length:
            log.warning(
                "conditioning item %d: trimming the conditioning video from %d to %d frames to fit", i, length, n
            )
        media = _load(c.media, request, n, padding, just_crop=True)
        if media.shape[2] != n:  # the file changed since it was probed
            raise RequestError(
                f"conditioning item {i}: expected {n} frames, read {media.shape[2]}", param=f"conditioning[{i}].media"
            )
        items.append((media, c.frame, c.strength))
    source = None
    if request.input_media is not None:
        source = _load(request.input_media, request, num_frames, padding, just_crop=False)
        if source.shape[2] < num_frames:
            raise RequestError(
                f"the input video has {source.shape[2]} frames but {num_frames} are generated", param="input_media"
            )
        source = source[:, :, :num_frames]
    controls = [
        _load_control(i, c, length, request, num_frames, padding)
        for (i, c), length in zip(control_items(request), plan.control)
    ]
    return PassMedia(conditioning=tuple(items), source=source, control=tuple(controls))


def _load_control(
    i: int, c: ControlVideo, length: int | None, request: GenerationRequest, num_frames: int, padding: tuple[int, ...]
) -> PassControl:
    if c.media is None or length is None:
        return PassControl(None, c.strength, tuple(c.passes))
    if length > num_frames:
        log.warning(
            "control video %d: using the first %d of its %d frames (the generated length)", i, num_frames, length
        )
    if isinstance(c.media, torch.Tensor):
        video = _load(c.media, request, num_frames, padding, just_crop=False)
    else:
        video = load_media(Path(c.media), request.height, request.width, num_frames, preprocess=False)
    if video.shape[2] != num_frames:  # the file changed since it was probed
        raise RequestError(
            f"control video {i}: expected {num_frames} frames, read {video.shape[2]}", param=f"conditioning[{i}].media"
        )
    if c.preprocess == "canny":
        from ltxv.conditioning.control import canny

        video = canny(video)
    if not isinstance(c.media, torch.Tensor):
        video = F.pad(video, padding, value=-1.0)
    return PassControl(video, c.strength, tuple(c.passes))
