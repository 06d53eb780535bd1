"""Residency policy: the text encoder visits the compute device only while it encodes, when offloading is asked."""

from __future__ import annotations

import torch

from ltxv.runtime.residency import Residency


class _FakeEncoder:
    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.moves: list[str] = []

    def to(self, device: str | torch.device) -> _FakeEncoder:
        self.device = torch.device(device)
        self.moves.append(str(device))
        return self


def test_offload_moves_the_encoder_back_to_cpu_after_encoding() -> None:
    r = Residency(torch.device("cuda"), offload_text_encoder=True)
    enc = _FakeEncoder("cpu")
    for _ in range(2):  # two requests: up, encode, down, each time
        r.text_encoder_ready(enc)  # type: ignore[arg-type]
        assert enc.device.type == "cuda"
        r.text_encoder_done(enc)  # type: ignore[arg-type]
        assert enc.device.type == "cpu"
    assert enc.moves == ["cuda", "cpu", "cuda", "cpu"]


def test_without_offload_the_encoder_stays() -> None:
    r = Residency(torch.device("cuda"))
    enc = _FakeEncoder("cuda")
    r.text_encoder_ready(enc)  # type: ignore[arg-type]
    r.text_encoder_done(enc)  # type: ignore[arg-type]
    assert enc.moves == []
