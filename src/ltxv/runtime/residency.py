"""Which model lives on which device, and when. Pipelines ask this object; they never move models themselves."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltxv.text.t5 import TextEncoder


@dataclass
class Residency:
    """``offload_text_encoder``: T5 (about 9.5 GB in bf16 for the XXL encoder) is brought to the compute device only
    to encode the prompts and sent back to the CPU right after, like the reference's ``--offload_to_cpu``."""

    compute: torch.device
    offload_text_encoder: bool = False

    def text_encoder_ready(self, encoder: TextEncoder) -> None:
        if encoder.device != self.compute:
            encoder.to(self.compute)

    def text_encoder_done(self, encoder: TextEncoder) -> None:
        if self.offload_text_encoder and encoder.device.type != "cpu":
            encoder.to("cpu")
