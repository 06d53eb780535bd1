"""Exact streaming decode of the video VAE: latent frames enter the decoder a few at a time and every layer keeps only
the few frames it still needs, so working memory is O(frames per layer) instead of O(all frames).

Why not overlapping temporal chunks: the 0.9.5 decoder's temporal receptive field (~20 latent frames: ~40 non-causal
k=3 convs, at 1x to 8x the latent frame rate) is larger than a whole 97-frame clip (13 latent frames), so halos
would cover everything. Streaming instead computes every output frame with the one-shot decode's arithmetic:

* a temporal conv keeps the last two input frames it has seen and emits an output frame once its right context has
  arrived; the replicated edge frames of the one-shot padding are added at the stream start (one copy of the first
  frame, two when causal) and at the end (one copy of the last frame, none when causal);
* a residual waits with its input frames in a queue until its (delayed) branch emits the matching frames;
* depth-to-space maps each frame to its own output frames, the first dropped once when time doubles;
* norms (pixel norm), SiLU, the timestep scale/shift, noise injection and unpatchify act on each frame alone.

GroupNorm mixes statistics over all frames and cannot stream exactly: :func:`can_stream` is False for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.model.vae_blocks import CausalConv3d, DepthToSpaceUp, ResBlock, ResStack, depth_to_space, modulation, randn

if TYPE_CHECKING:
    from ltxv.model.vae import Decoder

# What a streaming op returns: a block of frames (B, C, n, H, W) with n >= 1, or None while nothing is ready.
Frames = torch.Tensor | None


class StreamOp(Protocol):
    def push(self, x: Frames, last: bool = False) -> Frames:
        """Consume the next frames (B, C, n, H, W), or none; ``last``: the stream ends with them. Returns the output
        frames that are now final (all the remaining ones when ``last``)."""
        ...


def _cat(parts: list[Frames]) -> Frames:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _frames(parts: list[torch.Tensor]) -> int:
    return sum(p.shape[2] for p in parts)


def _take(parts: list[torch.Tensor], n: int) -> Frames:
    """The first ``n`` frames of a queue of blocks, removed from it."""
    out = []
    while n and parts:
        head = parts[0]
        if head.shape[2] <= n:
            out.append(parts.pop(0))
            n -= head.shape[2]
        else:
            out.append(head[:, :, :n])
            parts[0], n = head[:, :, n:], 0
    return _cat(out)


class Map:
    """A per-frame function: no state, no delay."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn

    def push(self, x: Frames, last: bool = False) -> Frames:
        return None if x is None else self.fn(x)


class DropFirst:
    """Drops the stream's first frame (depth-to-space's causal first frame is not doubled)."""

    def __init__(self) -> None:
        self.dropped = False

    def push(self, x: Frames, last: bool = False) -> Frames:
        if x is None or self.dropped:
            return x
        self.dropped = True
        return x[:, :, 1:] if x.shape[2] > 1 else None


class TemporalConv:
    """A :class:`CausalConv3d` (stride 1, k = 3 in time), streamed with its own parameters. Non-causal: one frame of
    delay; causal: none.

    ``full``: (B, frames, H, W) of the conv's whole input in the one-shot decode. PyTorch picks a CPU convolution by
    input size, and for a short block it falls back to its native ``slow_conv3d`` where the whole clip goes to oneDNN:
    measured 3-4x slower, and rounding differently (3.7e-6). So when the one-shot decode's conv runs on oneDNN, every
    block goes to oneDNN too (``torch.mkldnn_convolution``), which computes each output frame alike whatever the
    block's length (tested bit for bit)."""

    def __init__(
        self, conv: CausalConv3d, causal: bool, full: tuple[int, ...] | None = None, like: Frames = None
    ) -> None:
        self.conv, self.causal = conv.conv, causal
        self.buf: torch.Tensor | None = None  # (B, C, <= 2 + n, H, W): the inputs still needed, padding included
        self.onednn = full is not None and like is not None and _one_shot_uses_onednn(self.conv, full, like)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.onednn:
            return torch.mkldnn_convolution(x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups)
        return c(x)

    def push(self, x: Frames, last: bool = False) -> Frames:
        if x is not None:
            first = x[:, :, :1]
            if self.buf is not None:
                parts = [self.buf, x]
            else:  # the stream's start: the one-shot's front padding
                parts = [first, first, x] if self.causal else [first, x]
            self.buf = torch.cat(parts, dim=2)
        if self.buf is None:
            return None
        if last and not self.causal:  # the one-shot's back padding
            self.buf = torch.cat([self.buf, self.buf[:, :, -1:]], dim=2)
        out = None
        if self.buf.shape[2] >= 3:
            # Contiguous as in CausalConv3d: conv rounding depends on the memory layout.
            out = self._conv(self.buf.contiguous())
        # A copy of the frames still needed, so that the consumed frames' storage is freed now.
        self.buf = None if last else self.buf[:, :, -2:].clone()
        return out


def _one_shot_uses_onednn(conv: nn.Conv3d, full: tuple[int, ...], like: torch.Tensor) -> bool:
    """Whether PyTorch runs ``conv`` on oneDNN for the one-shot decode's input (B, C, frames + 2, H, W) (its temporal
    padding included), asked of PyTorch's own backend choice on a stand-in of that shape without storage."""
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None or like.device.type != "cpu" or conv.padding_mode != "zeros":
        return False
    b, frames, h, w = full
    x = torch.zeros((), dtype=like.dtype, device=like.device).expand(b, conv.in_channels, frames + 2, h, w)
    args = (list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0, 0], conv.groups, None)
    return select(x, conv.weight, conv.bias, *args) == torch._C._ConvBackend.Mkldnn


class Chain:
    """Ops in sequence. With a ``window`` (bytes), each op works on blocks of about that size, gathering frames that
    arrive in smaller blocks and cutting larger ones: layers whose frames are small (low resolution, heavy weights)
    see few large calls, layers whose frames are big see a few frames at a time. Whatever an op emits goes on
    through the later ops before it takes its next block (depth first), so no layer ever holds much more than a
    window, at the stream's end too, when frames held back by the layers' delays come out. Without a window, each op
    takes whatever arrives."""

    def __init__(self, ops: list[StreamOp], window: int | None = None) -> None:
        self.ops, self.window = ops, window
        self.pending: list[list[torch.Tensor]] = [[] for _ in ops]  # each op's input frames not yet taken

    def push(self, x: Frames, last: bool = False) -> Frames:
        return _cat(list(self.blocks(x, last)))

    def blocks(self, x: Frames, last: bool = False) -> Iterator[torch.Tensor]:
        """:meth:`push`, as the sequence of output blocks, for a caller that consumes them one by one."""
        return self._feed(0, x, last)

    def _feed(self, i: int, x: Frames, last: bool) -> Iterator[torch.Tensor]:
        if i == len(self.ops):
            if x is not None:
                yield x
            return
        queue = self.pending[i]
        if x is not None:
            queue.append(x)
        n = _frames(queue)
        if self.window is not None and queue:
            n = max(1, int(self.window // (queue[0][:, :, :1].numel() * queue[0].element_size())))
        while _frames(queue) > n or (queue and _frames(queue) == n and not last):
            yield from self._feed(i + 1, self.ops[i].push(_take(queue, n)), False)
        if last:  # the rest, at most one block, goes with the end of the stream
            yield from self._feed(i + 1, self.ops[i].push(_take(queue, n), True), True)


class Residual:
    """``combine(x, branch(x))``, where the branch emits one frame per input frame but later: each input frame waits in
    a queue until the branch's matching frame arrives."""

    def __init__(self, branch: StreamOp, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.branch, self.combine = branch, combine
        self.queue: list[torch.Tensor] = []

    def push(self, x: Frames, last: bool = False) -> Frames:
        if x is not None:
            self.queue.append(x)
        h = self.branch.push(x, last)
        if last and _frames(self.queue) != (0 if h is None else h.shape[2]):
            raise AssertionError("a residual branch emitted a different number of frames than it consumed")
        if h is None:
            return None
        skip = _take(self.queue, h.shape[2])
        assert skip is not None
        return self.combine(skip, h)


def _modulate(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale) + shift  # the one-shot decoder's expression, for equal rounding


def _res_block(
    block: ResBlock,
    causal: bool,
    temb: torch.Tensor | None,
    noise: list[torch.Tensor],
    full: tuple[int, ...] | None = None,
    like: Frames = None,
) -> Residual:
    """One resnet. ``noise``: its two pre-drawn noise terms (B=1, C, 1, H, W), or empty without noise injection;
    ``full`` and ``like``: see :class:`TemporalConv`."""
    mod = modulation(block.scale_shift_table, temb) if temb is not None else None  # shift1, scale1, shift2, scale2

    def pre1(x: torch.Tensor) -> torch.Tensor:
        h = block.norm1(x)
        return F.silu(h if mod is None else _modulate(h, mod[1], mod[0]))

    def mid(h: torch.Tensor) -> torch.Tensor:
        if noise:
            h = h.add_(noise[0])
        h = block.norm2(h)
        return F.silu(h if mod is None else _modulate(h, mod[3], mod[2]))

    ops: list[StreamOp] = [
        Map(pre1),
        TemporalConv(block.conv1, causal, full, like),
        Map(mid),
        TemporalConv(block.conv2, causal, full, like),
    ]
    if noise:
        ops.append(Map(lambda h: h.add_(noise[1])))

    def join(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if hasattr(block, "conv_shortcut"):
            x = block.conv_shortcut(block.norm3(x))
        return x + h

    return Residual(Chain(ops), join)


def _depth_to_space_up(
    block: DepthToSpaceUp, causal: bool, full: tuple[int, ...] | None = None, like: Frames = None
) -> list[StreamOp]:
    def join(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = depth_to_space(y, block.stride)
        if block.residual:  # channel-tiled skip, added as the one-shot block does
            skip = depth_to_space(x, block.stride)
            y.unflatten(1, (block.tiles, skip.shape[1])).add_(skip.unsqueeze(1))
        return y

    up = Residual(TemporalConv(block.conv, causal, full, like), join)
    return [up, DropFirst()] if block.stride[0] == 2 else [up]


def can_stream(decoder: Decoder) -> bool:
    """Whether :func:`decode_stream` equals the one-shot decode: not with GroupNorm (statistics over all frames)."""
    return not any(isinstance(m, nn.GroupNorm) for m in decoder.modules())


def decoder_stream(
    decoder: Decoder, t: torch.Tensor | None, like: torch.Tensor, generator: torch.Generator | None
) -> tuple[Chain, tuple[int, ...]]:
    """The decoder as a streaming :class:`Chain` from raw latents to video frames, and the video's shape.

    ``t``: the scaled decode timesteps (B,) or None; ``like``: the raw latents (B, C, F', H', W'), for shape, dtype
    and device. The noise of noise-injecting resnets is drawn here, from ``generator`` (the global RNG when None), in
    the one-shot decode's order and shapes, so that both draw the same maps."""
    if not can_stream(decoder):
        raise ValueError("a GroupNorm VAE decoder cannot be streamed exactly; decode it in one shot")
    causal = decoder.causal
    b, _, frames, h, w = like.shape
    ops: list[StreamOp] = [TemporalConv(decoder.conv_in, causal, (b, frames, h, w), like)]
    for block in decoder.up_blocks:
        full = (b, frames, h, w)
        if isinstance(block, ResStack):
            temb = block.time_embedder(t, like.dtype) if t is not None and hasattr(block, "time_embedder") else None
            ops += [
                _res_block(r, causal, temb, _draw_noise(r, h, w, like, generator), full, like) for r in block.res_blocks
            ]
        elif isinstance(block, ResBlock):  # WidenBlock: never timestep-conditioned
            ops.append(_res_block(block, causal, None, _draw_noise(block, h, w, like, generator), full, like))
        elif isinstance(block, DepthToSpaceUp):
            ops += _depth_to_space_up(block, causal, full, like)
            p, h, w = block.stride[0], h * block.stride[1], w * block.stride[2]
            frames = frames * p - (1 if p == 2 else 0)
        else:
            raise TypeError(f"no streaming form for decoder block {type(block).__name__}")
    last = None
    if t is not None:
        last = modulation(decoder.last_scale_shift_table, decoder.last_time_embedder(t, like.dtype))  # shift, scale

    def head(x: torch.Tensor) -> torch.Tensor:
        x = decoder.conv_norm_out(x)
        return F.silu(x if last is None else _modulate(x, last[1], last[0]))

    ops += [Map(head), TemporalConv(decoder.conv_out, causal, (b, frames, h, w), like), Map(decoder.unpatchify)]
    p = decoder.patch_size
    return Chain(ops), (b, decoder.conv_out.conv.out_channels // p**2, frames, h * p, w * p)


def _draw_noise(
    block: ResBlock, h: int, w: int, like: torch.Tensor, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """The resnet's two noise terms ``(noise[None] * scale)[None, :, None]`` (1, C, 1, H, W), as the one-shot adds."""
    if not block.inject_noise:
        return []
    n1 = randn((h, w), like, generator)
    n2 = randn((h, w), like, generator)
    return [(n1[None] * block.per_channel_scale1)[None, :, None], (n2[None] * block.per_channel_scale2)[None, :, None]]


# Each layer's block size, in output frames' bytes per streamed latent frame. Measured on the mid-sized benchmark VAE
# (base width 32, 384x640x49, bf16, default OpenMP waits, before the oneDNN rule of TemporalConv): 1 -> 86 MB working
# memory, 3.82 s; 2 -> 121 MB, 3.16 s; 8 (a latent frame's worth) -> 207 MB, 3.06 s; 16 -> 338 MB, 3.07 s. In
# float32 with passive waits on a loaded machine: 2 -> 208 MB, 12-15 s; 1 -> 75-106 MB, 15-19 s; 0.5 -> 56 MB,
# 15-16 s (timings at load 11 on 2 cores, within their noise of each other).
WINDOW_FRAMES = 1

# A consumer of decoded video: (first frame index, frames (B, 3, n, H, W)), called in frame order.
FrameSink = Callable[[int, torch.Tensor], None]


def decode_stream(
    decoder: Decoder,
    z: torch.Tensor,
    t: torch.Tensor | None,
    generator: torch.Generator | None,
    chunk_frames: int,
    window: int | None = None,
    sink: FrameSink | None = None,
) -> torch.Tensor | None:
    """Raw latents (B, C, F', H', W') -> video, streamed ``chunk_frames`` latent frames at a time.

    The same number sets the layers' window (bytes, see :class:`Chain`) unless ``window`` is given: the bytes of
    :data:`WINDOW_FRAMES` output frames per latent frame of a chunk. Each finished block of output frames is written into the
    preallocated output, so the decode's peak is the output plus a few windows; or, with a ``sink``, handed to it as
    it is ready (nothing is assembled, None is returned), so the whole video never exists at once."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    chain, shape = decoder_stream(decoder, t, z, generator)
    frame_bytes = math.prod(shape[:2]) * math.prod(shape[3:]) * z.element_size()
    chain.window = window or int(chunk_frames * WINDOW_FRAMES * frame_bytes)
    out = torch.empty(shape, dtype=z.dtype, device=z.device) if sink is None else None  # (B, 3, F, H, W)
    done = 0
    chunks = z.split(chunk_frames, dim=2)
    for k, chunk in enumerate(chunks):
        for block in chain.blocks(chunk, last=k == len(chunks) - 1):
            if out is None:
                sink(done, block)  # type: ignore[misc]
            else:
                out[:, :, done : done + block.shape[2]] = block
            done += block.shape[2]
    assert done == shape[2], (done, shape)
    return out


class DecodeStream:
    """:func:`decode_stream` for latents that arrive piece by piece (a long video's windows): ``push`` the raw latent
    frames in order, as they become final; each finished block of video goes to ``sink`` as soon as the decoder's
    delays allow, and the stream ends when ``shape[2]`` frames have arrived. The output equals the one-shot decode of
    all the frames, which never exist at once on the way in or out.

    ``shape``: the raw latents' (B, C, F', H', W') once all have arrived; the decoder's noise maps are drawn here in
    the one-shot decode's order, so the stream draws what a one-shot decode of the whole would."""

    def __init__(
        self,
        decoder: Decoder,
        shape: tuple[int, ...],
        t: torch.Tensor | None,
        generator: torch.Generator | None,
        sink: FrameSink,
        *,
        dtype: torch.dtype,
        device: torch.device,
        chunk_frames: int = 1,
        window: int | None = None,
    ) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        like = torch.zeros((), dtype=dtype, device=device).expand(shape)  # shape, dtype and device, no storage
        self.chain, out_shape = decoder_stream(decoder, t, like, generator)
        frame_bytes = math.prod(out_shape[:2]) * math.prod(out_shape[3:]) * like.element_size()
        # The layers' window as decode_stream's. Not larger: a low-resolution layer gathers window / its frame bytes
        # frames per call, and the next layers' outputs for that block exist at once; a window that holds the whole
        # video at those layers (an 8 MiB window at 128x192 holds 60 s) makes the decode's memory grow with the
        # length again (measured: 0.70 -> 0.91 GiB from 361 to 1441 frames), although small frames decode 7x faster.
        self.chain.window = window or chunk_frames * WINDOW_FRAMES * frame_bytes
        self.sink, self.chunk_frames = sink, chunk_frames
        self.received, self.expected = 0, shape[2]
        self.emitted, self.out_frames = 0, out_shape[2]

    @property
    def finished(self) -> bool:
        return self.received == self.expected

    def push(self, z: torch.Tensor) -> None:
        """The next raw latent frames (B, C, n, H', W')."""
        if self.received + z.shape[2] > self.expected:
            raise ValueError(f"{self.received + z.shape[2]} latent frames pushed into a stream of {self.expected}")
        if z.shape[2] == 0:
            return
        for chunk in z.split(self.chunk_frames, dim=2):
            self.received += chunk.shape[2]
            for block in self.chain.blocks(chunk, last=self.finished):
                self.sink(self.emitted, block)
                self.emitted += block.shape[2]
        if self.finished:
            assert self.emitted == self.out_frames, (self.emitted, self.out_frames)
