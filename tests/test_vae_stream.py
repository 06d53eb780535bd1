"""The streaming VAE decode (``VideoVAE.decode(chunk_frames=...)``) equals the one-shot decode bit for bit, for every
decoder layout the package builds, at any chunk size; and its working memory is far below the one-shot's."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxv.config import vae_blocks
from ltxv.model.vae import VideoVAE
from ltxv.model.vae_stream import can_stream, decode_stream
from ltxv.testing.configs import TINY_VAE
from ltxv.testing.random_weights import random_state_dict

LAYOUTS = {
    "0.9.5": TINY_VAE,
    "causal-replicate": dataclasses.replace(TINY_VAE, causal_decoder=True, spatial_padding_mode="replicate"),
    # res_x_y widening, plain and residual depth-to-space, space-only and time-only upsampling, noise injection.
    "mixed-0.9.1-like": dataclasses.replace(
        TINY_VAE,
        timestep_conditioning=False,
        decoder_blocks=vae_blocks(
            ["res_x", {"num_layers": 2, "inject_noise": True}],
            ["compress_space", {}],
            ["compress_time", {}],
            ["res_x_y", {"multiplier": 2}],
            ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1}],
        ),
    ),
}


def _vae(cfg, seed: int = 0, dtype: torch.dtype = torch.float32) -> VideoVAE:
    vae = VideoVAE(cfg)
    vae.load_state_dict(random_state_dict(vae, seed))
    return vae.to(dtype).eval()


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_stream_equals_one_shot_bitwise(name: str, chunk: int) -> None:
    vae = _vae(LAYOUTS[name])
    z = torch.randn(1, vae.cfg.latent_channels, 6, 2, 3, generator=torch.Generator().manual_seed(1))
    t = 0.05 if vae.cfg.timestep_conditioning else None
    with torch.inference_mode():
        # The noise-injecting decoder draws its maps from the generator: the same seed for both decodes.
        one = vae.decode(z, t, torch.Generator().manual_seed(2), chunk_frames=None)
        streamed = vae.decode(z, t, torch.Generator().manual_seed(2), chunk_frames=chunk)
    assert one.shape[2] >= 21 and one.shape[3:] >= (32, 48)  # many frames per latent frame: delays matter
    assert torch.equal(streamed, one)


def test_stream_equals_one_shot_in_bfloat16_with_a_batch() -> None:
    vae = _vae(TINY_VAE, dtype=torch.bfloat16)
    z = torch.randn(2, 16, 4, 2, 2, generator=torch.Generator().manual_seed(3)).bfloat16()
    t = torch.tensor([0.05, 0.2])
    with torch.inference_mode():
        assert torch.equal(vae.decode(z, t, chunk_frames=3), vae.decode(z, t, chunk_frames=None))


def test_auto_streams_long_clips_and_not_groupnorm() -> None:
    vae = _vae(TINY_VAE)
    assert can_stream(vae.decoder)
    gn = _vae(
        dataclasses.replace(TINY_VAE, norm_layer="group_norm", encoder_base_channels=32, decoder_base_channels=32)
    )
    assert not can_stream(gn.decoder)
    with pytest.raises(ValueError, match="GroupNorm"):
        decode_stream(gn.decoder, torch.zeros(1, 16, 3, 1, 1), None, None, 1)
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        decode_stream(vae.decoder, torch.zeros(1, 16, 3, 1, 1), None, None, 0)
    z = torch.randn(1, 16, 3, 1, 1)
    with torch.inference_mode():  # GroupNorm with an explicit chunk: decoded in one shot (and says so)
        assert torch.equal(gn.decode(z, 0.05, chunk_frames=1), gn.decode(z, 0.05, chunk_frames=None))


def _peak_working_bytes(fn) -> int:
    """Peak bytes of tensors allocated during ``fn`` above what was alive before (CPU, via the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    alive = peak = 0
    # Each op's own allocations (its children's are theirs), and the frees, in time order.
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        alive += e.self_cpu_memory_usage
        peak = max(peak, alive)
    return peak


def test_stream_working_memory_is_a_fraction_of_one_shot() -> None:
    # Channels as wide relative to the output as the real decoder's last stage (128 at 1/4 size: 8 values per output
    # pixel there, 4 here), so the activations, not the output, dominate the one-shot decode as at real size.
    wide = dataclasses.replace(
        TINY_VAE,
        decoder_base_channels=64,
        decoder_blocks=vae_blocks(
            ["res_x", {"num_layers": 1}],
            ["compress_all", {"residual": True, "multiplier": 1}],
            ["res_x", {"num_layers": 1}],
            ["compress_all", {"residual": True, "multiplier": 1}],
            ["compress_all", {"residual": True, "multiplier": 1}],
            ["res_x", {"num_layers": 1}],
        ),
    )
    vae = _vae(wide)
    z = torch.randn(1, 16, 25, 2, 3)  # 193 frames
    video = 3 * 193 * 64 * 96 * 4
    with torch.inference_mode():
        one = _peak_working_bytes(lambda: vae.decode(z, 0.05, chunk_frames=None))
        streamed = _peak_working_bytes(lambda: vae.decode(z, 0.05, chunk_frames=1))
    assert one >= 5 * video  # the measurement sees the one-shot's activations (measured: 6.7x the output)
    assert video <= streamed <= 0.45 * one, (streamed / video, one / video)  # measured: 2.6x the output


@pytest.mark.parametrize("chunk", [None, 1])
def test_sink_receives_the_video_in_frame_order(chunk: int | None) -> None:
    vae = _vae(TINY_VAE)
    z = torch.randn(1, 16, 4, 2, 2, generator=torch.Generator().manual_seed(4))
    blocks: list[tuple[int, torch.Tensor]] = []
    with torch.inference_mode():
        whole = vae.decode(z, 0.05, chunk_frames=None)
        assert vae.decode(z, 0.05, chunk_frames=chunk, sink=lambda i, x: blocks.append((i, x.clone()))) is None
    starts = [i for i, _ in blocks]
    assert starts == sorted(starts) and starts[0] == 0
    assert (len(blocks) > 1) == (chunk is not None)
    assert torch.equal(torch.cat([x for _, x in blocks], dim=2), whole)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (a CPU build with MKL-DNN)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_conv_uses_the_one_shot_backend(dtype: torch.dtype) -> None:
    """PyTorch runs a conv of the whole clip (32 channels, 48 rows, 25 + 2 frames) on oneDNN, but one streamed block
    of 3 frames on its native slow_conv3d (its size rule), which rounds differently and is several times slower. The
    streamed conv follows the whole clip's choice, so each output frame is the one-shot's bit for bit."""
    from ltxv.model.vae_blocks import CausalConv3d
    from ltxv.model.vae_stream import TemporalConv, _one_shot_uses_onednn

    torch.manual_seed(0)
    conv = CausalConv3d(32, 32, "zeros").to(dtype).eval()
    x = torch.randn(1, 32, 25, 48, 8).to(dtype)
    with torch.inference_mode():
        assert _one_shot_uses_onednn(conv.conv, (1, 25, 48, 8), x)
        assert not _one_shot_uses_onednn(conv.conv, (1, 1, 48, 8), x) or dtype == torch.bfloat16
        one = conv(x, causal=False)
        stream = TemporalConv(conv, False, (1, 25, 48, 8), x)
        blocks = [stream.push(x[:, :, i : i + 1], last=i == 24) for i in range(25)]
        streamed = torch.cat([b for b in blocks if b is not None], dim=2)
    assert torch.equal(streamed, one)
