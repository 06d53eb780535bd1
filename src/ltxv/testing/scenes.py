"""Procedural test scenes with captions, and the measurements that tell whether a video shows what its caption says.

A scene is one flat-coloured shape (circle, square, triangle) of one of eight colours on a dark background, moving
left, right, up or down at a steady speed, or standing still. Geometry is in fractions of the frame, so one scene
renders alike at any size (the demo model is trained on these at 128x128 and at half that size). The captions read
"a red circle moving left", "a red circle standing still", and a few paraphrases.

The measurements work on any video (F, H, W, 3) in [0, 1], a rendered scene or a generated clip read back from its
mp4, and assume what the scenes guarantee: a dark background and one bright object.

* :func:`object_mask`: the object's pixels per frame.
* :func:`dominant_colour`: the colour name nearest the object's mean hue (or white).
* :func:`centroid_track`, :func:`displacement`, :func:`motion_of`: where the object is per frame, how far it moved
  over the clip (a least-squares line through the track), and which way ("left", ..., "still", or "unclear").
* :func:`fill_ratio`, :func:`shape_of`: how much of its bounding box the object fills (square 1, circle pi/4,
  triangle 1/2) and the shape that implies.
* :func:`psnr`, :func:`sharpness`: frame fidelity against a reference, and edge sharpness (for comparing recipes).

Example::

    scene = random_scene(random.Random(0), motion="left")
    video = render(scene, 128, 128, 25)  # (25, 128, 128, 3) float32 in [0, 1]
    assert motion_of(video) == "left" and dominant_colour(video) == scene.colour
"""

from __future__ import annotations

import colorsys
import math
import random
import re
from dataclasses import dataclass

import torch

# Saturated colours whose hues are well apart (the hue in degrees is what dominant_colour compares).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.12, 0.1),
    "orange": (1.0, 0.55, 0.05),
    "yellow": (1.0, 0.95, 0.1),
    "green": (0.1, 0.9, 0.2),
    "cyan": (0.1, 0.9, 0.95),
    "blue": (0.15, 0.3, 1.0),
    "magenta": (0.95, 0.15, 0.9),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still")
_DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0), "still": (0.0, 0.0)}
_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] * 360.0 for name, rgb in COLOURS.items() if name != "white"}
_WHITE_SATURATION = 0.3  # below this mean saturation the object is white

# Caption templates: {c} colour, {s} shape, {d} "left"/"up", {to} "to the left"/"up" (reads right for every direction).
MOVING_CAPTIONS = (
    "a {c} {s} moving {d}",
    "a {c} {s} moves {to}",
    "{c} {s} going {d}",
    "the {c} {s} slides {to}",
    "a {c} {s} travelling {d} across the frame",
)
STILL_CAPTIONS = (
    "a {c} {s} standing still",
    "a {c} {s} stays still",
    "{c} {s} not moving",
    "the {c} {s} rests in place",
    "a {c} {s} standing still in the frame",
)
# Every word the captions use (the demo tokenizer's vocabulary must hold them as whole pieces).
CAPTION_WORDS = sorted(
    {w for t in MOVING_CAPTIONS + STILL_CAPTIONS for w in t.split() if "{" not in w}
    | set(COLOURS)
    | set(SHAPES)
    | {"left", "right", "up", "down", "to", "the", "an"}
)

# Geometry, in fractions of the frame: shape size of the shorter side, travel over the clip of the motion's axis.
SIZE_RANGE = (0.2, 0.3)
TRAVEL_RANGE = (0.35, 0.55)
_MARGIN = 0.02


@dataclass(frozen=True)
class Scene:
    """One shape on a dark background. Positions are fractions of the frame, (y, x) from the top-left corner."""

    shape: str
    colour: str
    motion: str
    size: float  # the shape's bounding-box side, a fraction of min(height, width)
    start: tuple[float, float]  # centre at frame 0
    travel: float  # distance covered from the first to the last frame, a fraction of the motion axis (0 if still)
    background: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOURS or self.motion not in MOTIONS:
            raise ValueError(f"unknown scene {self.shape!r}/{self.colour!r}/{self.motion!r}")

    def caption(self, variant: int = 0) -> str:
        """The scene's caption; ``variant`` picks a paraphrase (0 is the canonical "a red circle moving left")."""
        return caption(self.colour, self.shape, self.motion, variant)

    def centre(self, t: float) -> tuple[float, float]:
        """The centre (y, x) at clip time t in [0, 1] (first to last frame)."""
        dy, dx = _DIRECTIONS[self.motion]
        return self.start[0] + dy * self.travel * t, self.start[1] + dx * self.travel * t


def caption(colour: str, shape: str, motion: str, variant: int = 0) -> str:
    """ "a {colour} {shape} moving {motion}" ("... standing still"), or paraphrase ``variant`` of it."""
    templates = STILL_CAPTIONS if motion == "still" else MOVING_CAPTIONS
    to = motion if motion in ("up", "down") else f"to the {motion}"
    text = templates[variant % len(templates)].format(c=colour, s=shape, d=motion, to=to)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "an orange circle"


def random_scene(
    rng: random.Random,
    *,
    shape: str | None = None,
    colour: str | None = None,
    motion: str | None = None,
    aspect: float = 1.0,
) -> Scene:
    """A scene drawn from ``rng``; any of shape, colour and motion can be fixed. The whole path stays inside the
    frame. ``aspect`` = width / height of the frame it will be rendered at (sizes are fractions of the shorter
    side, positions of each axis)."""
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(list(COLOURS))
    motion = motion or rng.choice(MOTIONS)
    size = rng.uniform(*SIZE_RANGE)
    half = (size / 2 * min(1.0, aspect), size / 2 * min(1.0, 1 / aspect))  # half-extent in fractions of (H, W)
    travel = 0.0 if motion == "still" else rng.uniform(*TRAVEL_RANGE)
    dy, dx = _DIRECTIONS[motion]
    start = []
    for axis, d in ((0, dy), (1, dx)):
        lo, hi = half[axis] + _MARGIN, 1.0 - half[axis] - _MARGIN
        if d > 0:
            hi -= travel
        elif d < 0:
            lo += travel
        start.append(rng.uniform(lo, hi))
    background = tuple(rng.uniform(0.0, 0.1) for _ in range(3))
    return Scene(shape, colour, motion, size, (start[0], start[1]), travel, background)  # type: ignore[arg-type]


def _coverage(shape: str, y: torch.Tensor, x: torch.Tensor, half: float) -> torch.Tensor:
    """Antialiased coverage in [0, 1] of a shape of half-size ``half`` px centred at the origin, at pixel centres
    (y, x): a signed distance (negative inside) turned into a one-pixel ramp."""
    if shape == "circle":
        d = torch.sqrt(y * y + x * x) - half
    elif shape == "square":
        d = torch.maximum(y.abs(), x.abs()) - half
    else:  # apex up, base at the bottom, as wide and as tall as the bounding box: max over the three edge lines
        base = y - half
        # the slanted edges from the apex (-half, 0) to (half, +-half)
        slant = (2 * x.abs() - y - half) / math.sqrt(5.0)
        d = torch.maximum(base, slant)
    return (0.5 - d).clamp(0.0, 1.0)


def render(scene: Scene, height: int, width: int, frames: int) -> torch.Tensor:
    """The scene as a video (frames, height, width, 3) float32 in [0, 1]."""
    unit = min(height, width)
    half = scene.size * unit / 2
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    colour = torch.tensor(COLOURS[scene.colour])
    background = torch.tensor(scene.background)
    out = torch.empty(frames, height, width, 3)
    for f in range(frames):
        cy, cx = scene.centre(f / max(frames - 1, 1))
        cov = _coverage(scene.shape, ys[:, None] - cy * height, xs[None, :] - cx * width, half)[..., None]
        out[f] = background + (colour - background) * cov
    return out


# --- measuring ---------------------------------------------------------------------------------------------------


def _as_float(video: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) uint8 or float in [0, 1] -> float32."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video (F, H, W, 3), got {tuple(video.shape)}")
    return video.float() / 255.0 if video.dtype == torch.uint8 else video.float()


def object_mask(video: torch.Tensor, *, min_contrast: float = 0.2) -> torch.Tensor:
    """(F, H, W) bool: pixels whose brightest channel is above halfway between the background (the clip's median
    brightness) and the object (its 99.5th percentile). All False when the clip has no bright object (the two
    differ by less than ``min_contrast``)."""
    v = _as_float(video).amax(dim=-1)  # (F, H, W)
    flat = v.flatten()
    if flat.numel() > 100_000:  # quantiles of a strided sample: the same answer, a bounded cost
        flat = flat[:: flat.numel() // 100_000 + 1]
    bg, peak = torch.quantile(flat, 0.5), torch.quantile(flat, 0.995)
    if peak - bg < min_contrast:
        return torch.zeros_like(v, dtype=torch.bool)
    return v > (bg + peak) / 2


def dominant_colour(video: torch.Tensor, mask: torch.Tensor | None = None) -> str | None:
    """The name in :data:`COLOURS` nearest the object's colour: white if its mean saturation is low, else the
    nearest hue (circular distance) to the mean RGB of its core pixels. None when there is no object."""
    video = _as_float(video)
    mask = object_mask(video) if mask is None else mask
    if not mask.any():
        return None
    pixels = video[mask]  # (M, 3)
    v = pixels.amax(dim=-1)
    core = pixels[v >= torch.quantile(v, 0.25)]  # drop the darkest quarter: edge pixels mixed with the background
    sat = ((core.amax(-1) - core.amin(-1)) / core.amax(-1).clamp_min(1e-6)).mean()
    if sat < _WHITE_SATURATION:
        return "white"
    hue = colorsys.rgb_to_hsv(*core.mean(dim=0).tolist())[0] * 360.0
    return min(_HUES, key=lambda name: min(abs(hue - _HUES[name]), 360.0 - abs(hue - _HUES[name])))


def centroid_track(video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(F, 2) centre of mass (y, x) of the object in each frame, in fractions of the frame height and width;
    NaN for frames without object pixels."""
    mask = object_mask(video) if mask is None else mask
    _, h, w = mask.shape
    m = mask.float()
    area = m.sum(dim=(1, 2))
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    cy = (m.sum(dim=2) * ys).sum(dim=1) / area
    cx = (m.sum(dim=1) * xs).sum(dim=1) / area
    return torch.stack([cy, cx], dim=1)  # NaN where area == 0


def displacement(video: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
    """(dy, dx): how far the object moved from the first to the last frame, in fractions of the frame, read off a
    least-squares line through its centroid track (robust to a jittery frame). NaN when fewer than two frames show
    the object."""
    track = centroid_track(video, mask)
    ok = ~track.isnan().any(dim=1)
    if ok.sum() < 2:
        return math.nan, math.nan
    t = torch.linspace(0.0, 1.0, track.shape[0])[ok]
    t0 = t - t.mean()
    slope = (t0[:, None] * (track[ok] - track[ok].mean(dim=0))).sum(dim=0) / (t0 * t0).sum()
    return float(slope[0]), float(slope[1])


def motion_of(
    video: torch.Tensor, mask: torch.Tensor | None = None, *, moving: float = 0.1, still: float = 0.05
) -> str:
    """ "left", "right", "up", "down" when the object moved at least ``moving`` of the frame, mostly along that
    axis; "still" when it moved less than ``still``; "unclear" otherwise (or when there is no object)."""
    dy, dx = displacement(video, mask)
    if math.isnan(dy):
        return "unclear"
    if math.hypot(dy, dx) < still:
        return "still"
    if max(abs(dy), abs(dx)) < moving:
        return "unclear"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def fill_ratio(video: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The median over frames of the object's area over its bounding box's area (square 1, circle pi/4 = 0.785,
    the scenes' triangle 0.5); NaN when no frame shows the object."""
    mask = object_mask(video) if mask is None else mask

    def extent(any_: torch.Tensor) -> torch.Tensor:  # (F, N) bool -> (F,) rows (or columns) from first to last hit
        i = torch.arange(any_.shape[1])
        return torch.where(any_, i, -1).amax(dim=1) - torch.where(any_, i, any_.shape[1]).amin(dim=1) + 1

    seen = mask.flatten(1).any(dim=1)
    if not seen.any():
        return math.nan
    box = extent(mask.any(dim=2)) * extent(mask.any(dim=1))
    return float((mask.flatten(1).sum(dim=1)[seen] / box[seen]).median())


# Fill thresholds halfway between the shapes' ideal fills (0.5, pi/4, 1), nudged towards the lower shape because
# soft or ragged edges lower a fill, never raise it.
_TRIANGLE_BELOW, _CIRCLE_BELOW = 0.63, 0.88


def shape_of(video: torch.Tensor, mask: torch.Tensor | None = None) -> str | None:
    """ "square", "circle" or "triangle" from :func:`fill_ratio`; None when there is no object."""
    fill = fill_ratio(video, mask)
    if math.isnan(fill):
        return None
    return "triangle" if fill < _TRIANGLE_BELOW else "circle" if fill < _CIRCLE_BELOW else "square"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images or videos in [0, 1] (uint8 is scaled), peak 1."""
    a, b = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float() for x in (a, b))
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def sharpness(video: torch.Tensor, top: float = 0.005) -> float:
    """Edge sharpness in [0, 1]: the mean of the largest ``top`` fraction of brightness steps between neighbouring
    pixels (brightest channel, the larger of the two axes), over all frames. At the scenes' sizes that fraction
    lies on the object's outline: a hard edge of contrast c scores about c, the same edge blurred over k pixels
    about c / k, so a bilinear upscale scores clearly lower than a clip decoded at full size."""
    v = _as_float(video).amax(dim=-1)  # (F, H, W)
    gy = (v[:, 1:, :-1] - v[:, :-1, :-1]).abs()
    gx = (v[:, :-1, 1:] - v[:, :-1, :-1]).abs()
    g = torch.maximum(gy, gx).flatten()
    k = max(1, int(g.numel() * top))
    return float(g.topk(k).values.mean())
