"""Training clips drawn from the procedural scenes of :mod:`ltxv.testing.scenes`, as model inputs."""

from __future__ import annotations

import random

import torch

from ltxv.testing.scenes import COLOURS, MOTIONS, SHAPES, Scene, random_scene, render

FRAMES = 25  # the demo's clip length: 7 latent frames
SIZE = 128  # the demo's full size: an 8x8 latent grid; pass 1 of the multi-scale recipe runs at half of it


def clip(scene: Scene, size: int, frames: int = FRAMES) -> torch.Tensor:
    """The scene rendered as the VAE takes it: (3, F, H, W) in [-1, 1]."""
    return render(scene, size, size, frames).permute(3, 0, 1, 2).mul(2).sub(1)


def balanced_scenes(rng: random.Random, n: int) -> list[Scene]:
    """``n`` scenes cycling through every (shape, colour, motion), in a shuffled order, positions and sizes random."""
    combos = [(s, c, m) for s in SHAPES for c in COLOURS for m in MOTIONS]
    out = []
    while len(out) < n:
        rng.shuffle(combos)
        out += [random_scene(rng, shape=s, colour=c, motion=m) for s, c, m in combos[: n - len(out)]]
    return out
