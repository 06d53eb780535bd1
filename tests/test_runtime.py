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


def test_stg_mask_perturbs_the_perturbed_branch_of_every_batch_element() -> None:
    from ltxv.pipelines.denoise import skip_layer_mask

    m = skip_layer_mask(num_layers=4, n_branches=3, batch=2, blocks=(1, 3))  # batch [u0 u1 c0 c1 p0 p1]
    want = torch.ones(4, 6)
    want[1, 4:] = 0
    want[3, 4:] = 0
    assert torch.equal(m, want)
    # The reference's construction (transformer3d.py create_skip_layer_mask) marks samples 2 and 5 instead: c0 and p1.
    ref = torch.ones(4, 6)
    ref[1, 2::3] = 0
    assert not torch.equal(ref[1], m[1])


def test_stg_block_out_of_range_is_named() -> None:
    import pytest

    from ltxv.pipelines.denoise import skip_layer_mask

    with pytest.raises(ValueError, match=r"names block\(s\) \[42\], but the transformer has 28"):
        skip_layer_mask(28, 2, 1, (42,))
