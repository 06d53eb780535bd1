"""What a running generation reports: one :class:`ProgressEvent` per unit of work, to one callback.

Stages, in order: ``text`` (the prompts encoded), ``denoise`` (one event per step of each pass), ``upsample`` (the
latent upsampler between the passes) and ``decode`` (one event per block of frames leaving the streaming VAE decoder).
A stage reports ``done`` of ``total`` units; denoise steps also carry the pass, the time, the transformer that ran
and the step's latents (a long video's steps also its window), so a caller can heartbeat, draw a progress bar, cancel (raise from the callback: the
generation stops there and the exception propagates), or preview the video from the denoised prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

Stage = Literal["text", "denoise", "upsample", "decode"]


@dataclass(frozen=True)
class ProgressEvent:
    stage: Stage
    done: int  # units of the stage finished (steps, or decoded frames), 1..total
    total: int
    pass_index: int = 0  # denoise: 0-based pass (multi-scale has two)
    num_passes: int = 1
    t: float | None = None  # denoise: the time the step started at
    model: str | None = None  # denoise: the label of the transformer that ran the step
    latents: torch.Tensor | None = None  # denoise: (1, C, f, h, w) normalised video latents after the step
    denoised: torch.Tensor | None = None  # denoise: (1, C, f, h, w) the step's prediction of the clean latents
    window: int = 0  # denoise: 0-based temporal window of a long video (one window otherwise)
    num_windows: int = 1

    def describe(self) -> str:
        """A short label for progress bars and logs, e.g. ``denoise pass 1/2`` or ``denoise window 3/26``."""
        label = self.stage
        if self.stage == "denoise" and self.num_passes > 1:
            label += f" pass {self.pass_index + 1}/{self.num_passes}"
        if self.stage == "denoise" and self.num_windows > 1:
            label += f" window {self.window + 1}/{self.num_windows}"
        return label


ProgressCallback = Callable[[ProgressEvent], None]
