"""Sequence parallelism: 2 gloo ranks on this CPU give the single-process video (fp32, 1e-5), for text- and
image-to-video with and without CFG/STG, token counts the ranks do not divide, Ulysses and the ring; the bytes the
collectives moved equal the closed form; a step cache wraps the split call. All ranks run in one spawn per module (a
rank process costs seconds to start on this machine)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist

from ltxv.config import TransformerConfig
from ltxv.model.attention import SkipLayerStrategy, sdpa
from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.parallel.attention import CommStats, token_splits
from ltxv.parallel.launch import run_local
from ltxv.parallel.sequence import SequenceParallel
from ltxv.parallel.volume import call_volume
from ltxv.pipelines.denoise import CallTransformer, TransformerCall
from ltxv.pipelines.generate import Pipeline, load_pipeline
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, PassSettings, Recipe
from ltxv.testing.checkpoints import write_tiny_kit
from ltxv.testing.configs import TINY_2B
from ltxv.testing.random_weights import random_state_dict

TOL = 1e-5
FP32 = torch.float32  # the pipelines default to bfloat16 on a CPU with fast bf16; the parity is fp32
TINY_3_HEADS = replace(TINY_2B, num_attention_heads=3, cross_attention_dim=192)  # 2 ranks do not divide 3 heads


def _model(cfg: TransformerConfig = TINY_2B) -> Transformer:
    m = Transformer(cfg).eval()
    m.load_state_dict(random_state_dict(m, 0, torch.float32))
    return m


def _call(m: Transformer, f: int, h: int, w: int, *, stg: bool, per_token: bool = True) -> TransformerCall:
    """A guided call: 2 branches (cond, perturbed) with STG in block 1 of the perturbed one, or 1 branch."""
    g = torch.Generator().manual_seed(f * 100 + h * 10 + w)
    c, n, rows = m.cfg, f * h * w, 2 if stg else 1
    text = m.prepare_text(torch.randn(rows, 5, c.caption_channels, generator=g), torch.ones(rows, 5))
    rope = m.rope(pixel_positions(latent_grid(f, h, w, 1), causal_fix=True, frame_rate=25.0))
    return TransformerCall(
        step=0,
        label="main",
        model=m,
        tokens=torch.randn(rows, n, c.in_channels, generator=g),
        timesteps=torch.rand(rows, n if per_token else 1, generator=g),
        text=text,
        rope=rope,
        skip_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]) if stg else None,
        skip_strategy=SkipLayerStrategy.ATTENTION_VALUES if stg else None,
        branches=("cond", "perturbed") if stg else ("cond",),
        batch=1,
    )


def _requests() -> dict[str, GenerationRequest]:
    """96 x 96 x 17 is 3 x 3 x 3 = 27 latent tokens: odd, so 2 ranks hold 14 and 13."""
    plain = Recipe(first_pass=PassSettings(num_inference_steps=4), decode_timestep=0.05)
    guided = PassSettings(num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, skip_block_list=(1,))
    image = torch.linspace(-1, 1, 3 * 96 * 96).reshape(3, 96, 96).sin()  # (3, H, W) in [-1, 1]
    base = GenerationRequest("a red fox", height=96, width=96, num_frames=17, seed=5, recipe=plain)
    i2v = replace(base, conditioning=(ConditioningMedia(image),), media_preprocess=False)
    two_pass = Recipe(
        pipeline_type="multi-scale",
        first_pass=guided,
        second_pass=PassSettings(timesteps=(0.9, 0.5, 0.2), stochastic_sampling=True),
        decode_timestep=0.05,
    )
    return {
        "t2v": base,
        "t2v_cfg_stg": replace(base, recipe=replace(plain, first_pass=guided)),
        "i2v": i2v,
        "i2v_cfg_stg": replace(i2v, recipe=replace(plain, first_pass=guided)),
        # Pass 1 at 32 x 32: 3 tokens over 2 ranks; a keyframe appends tokens; stochastic sampling's noise.
        "keyframe_multiscale": replace(
            base,
            conditioning=(ConditioningMedia(image, frame=16),),
            media_preprocess=False,
            recipe=two_pass,
        ),
    }


class _EveryOtherStep:
    """A toy step cache: odd steps reuse the last velocity. It wraps whatever call it is given."""

    def __init__(self, inner: CallTransformer) -> None:
        self.inner, self.last = inner, None

    def __call__(self, call: TransformerCall) -> torch.Tensor:
        if call.step % 2 == 0 or self.last is None or self.last.shape[:2] != call.tokens.shape[:2]:
            self.last = self.inner(call)
        return self.last


def _cached(pipe: Pipeline) -> Pipeline:
    plain = pipe.transformer_call
    pipe.transformer_call = lambda r, i: _EveryOtherStep(plain(r, i) or TransformerCall.run)  # type: ignore[method-assign]
    return pipe


class _PartsCache:
    """A toy step cache that runs the network in parts, as a real one does: even steps run every block and keep the
    residual of the whole stack, odd steps add it to the embedded tokens instead; every step records a statistic of
    the embedded tokens, summed by ``reduce`` (over the ranks, inside a split call)."""

    def __init__(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> None:
        self.reduce, self.residual, self.seen = reduce, None, []

    def __call__(self, call: TransformerCall) -> torch.Tensor:
        m = call.model
        x, modulation, embedded = m.embed(call.tokens, call.timesteps)
        self.seen.append(float(self.reduce(x.abs().sum(dtype=torch.float32))))
        if call.step % 2 == 0 or self.residual is None or self.residual.shape != x.shape:
            before = x.clone()
            skips = m.skip_masks(call.skip_mask, x.shape[0], x.dtype)
            x = m.run_blocks(x, call.text, modulation, call.rope, skips, call.skip_strategy)
            self.residual = x - before
        else:
            x = x + self.residual
        return m.head(x, embedded)


def _parts_cached(pipe: Pipeline, seen: list[float]) -> Pipeline:
    """The cache inside the split call (on this rank's shard, split attention in its blocks), or plain alone."""

    def call(request: GenerationRequest, pass_index: int) -> CallTransformer:
        if pipe.group is None:
            cache = _PartsCache()
        else:
            split = SequenceParallel(pipe.group)
            cache = split.inner = _PartsCache(reduce=split.reduce_sum)
        cache.seen = seen
        return split if pipe.group is not None else cache

    pipe.transformer_call = call  # type: ignore[method-assign]
    return pipe


def _videos(pipe: Pipeline) -> dict[str, torch.Tensor]:
    out = {name: pipe.generate(r).video for name, r in _requests().items()}
    for spec in ("static:1,3,2", "fbc:0.05"):  # the pipeline's own step cache: inside the split call in a split run
        result = pipe.generate(replace(_requests()["t2v_cfg_stg"], cache=spec))
        out[spec] = result.video
        out[f"{spec} reused"] = torch.tensor([list(r.reused) for p in result.cache.passes for r in p.steps])
    seen: list[float] = []
    out["cached_inside"] = _parts_cached(pipe, seen).generate(_requests()["t2v_cfg_stg"]).video
    out["cache_statistics"] = torch.tensor(seen, dtype=torch.float64)
    out["cached"] = _cached(pipe).generate(_requests()["t2v_cfg_stg"]).video
    return out


def _rank(group: dist.ProcessGroup, kit: dict[str, str]) -> dict[str, object]:
    """Everything a rank checks: the pipeline's videos, and split calls against the plain call on this rank."""
    with torch.inference_mode():
        calls: dict[str, object] = {}
        for cfg, mode, grid in (
            (TINY_2B, "ulysses", (3, 3, 3)),
            (TINY_2B, "ulysses", (2, 2, 3)),
            (TINY_2B, "ring", (3, 3, 3)),
            (TINY_3_HEADS, "auto", (3, 3, 3)),
        ):
            m = _model(cfg)
            for stg in (False, True):
                call = _call(m, *grid, stg=stg, per_token=stg)
                stats = CommStats()
                sp = SequenceParallel(group, mode=mode, stats=stats)
                got = sp(call)
                key = f"{cfg.num_attention_heads}h_{mode}_{'x'.join(map(str, grid))}_{'stg' if stg else 'plain'}"
                calls[key] = {"diff": float((got - call.run()).abs().max()), "sent": dict(stats.sent)}
    pipe = load_pipeline(
        kit["checkpoint"], upsampler=kit["upsampler"], text_encoder=kit["text_encoder"], dtype=FP32, group=group
    )
    return {"videos": _videos(pipe), "calls": calls}


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    k = write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)
    return {"checkpoint": str(k.checkpoint), "upsampler": str(k.upsampler), "text_encoder": str(k.text_encoder)}


@pytest.fixture(scope="module")
def ranks(kit: dict[str, str]) -> list[dict[str, object]]:
    return run_local(_rank, 2, kit, threads=1, timeout=300)


@pytest.fixture(scope="module")
def single(kit: dict[str, str]) -> dict[str, torch.Tensor]:
    return _videos(
        load_pipeline(kit["checkpoint"], upsampler=kit["upsampler"], text_encoder=kit["text_encoder"], dtype=FP32)
    )


@pytest.mark.parametrize("name", [*_requests(), "cached", "cached_inside"])
def test_two_ranks_give_the_single_process_video(ranks, single, name: str) -> None:
    """Every request, and a step cache outside the split call (``cached``) or inside it (``cached_inside``)."""
    for r in ranks:
        got = r["videos"][name]  # type: ignore[index]
        assert got.shape == single[name].shape
        assert (got - single[name]).abs().max() <= TOL
    assert torch.equal(ranks[0]["videos"][name], ranks[1]["videos"][name])  # type: ignore[index]


def test_the_pipelines_step_cache_runs_inside_the_split_call(ranks, single) -> None:
    """``cache=`` on a split pipeline: a fixed schedule gives the single-process video; fbc's indicator is summed over
    the ranks, so both ranks reuse the same steps (their videos are equal)."""
    assert single["static:1,3,2 reused"].any() and not single["static:1,3,2 reused"].all()
    for r in ranks:
        assert (r["videos"]["static:1,3,2"] - single["static:1,3,2"]).abs().max() <= TOL  # type: ignore[index]
        assert torch.equal(r["videos"]["static:1,3,2 reused"], single["static:1,3,2 reused"])  # type: ignore[index]
    for key in ("fbc:0.05", "fbc:0.05 reused"):
        assert torch.equal(ranks[0]["videos"][key], ranks[1]["videos"][key])  # type: ignore[index]


def test_a_cache_inside_decides_on_whole_sequence_statistics(ranks, single) -> None:
    """The cache inside the split call saw, on every rank, the whole sequence's statistic (summed over the ranks)."""
    want = single["cache_statistics"]
    assert len(want) == 4
    for r in ranks:
        got = r["videos"]["cache_statistics"]  # type: ignore[index]
        assert torch.allclose(got, want, rtol=1e-5, atol=0)


def test_split_calls_equal_the_plain_call(ranks) -> None:
    calls = ranks[0]["calls"]
    assert len(calls) == 8  # type: ignore[arg-type]
    for key, c in calls.items():  # type: ignore[union-attr]
        assert c["diff"] <= 1e-5, key
        assert c["diff"] == ranks[1]["calls"][key]["diff"] or c["diff"] <= 1e-6  # type: ignore[index]
    # The heads-3 model under "auto" took the ring (2 ranks do not divide 3 heads); 2 heads took Ulysses.
    assert set(calls["3h_auto_3x3x3_plain"]["sent"]) == {"ring_kv", "gather"}  # type: ignore[index]
    assert set(calls["2h_ulysses_3x3x3_plain"]["sent"]) == {"ulysses_qkv", "ulysses_out", "gather"}  # type: ignore[index]


@pytest.mark.parametrize(
    "key", ["2h_ulysses_3x3x3_plain", "2h_ulysses_2x2x3_stg", "2h_ring_3x3x3_stg", "3h_auto_3x3x3_plain"]
)
def test_bytes_sent_equal_the_closed_form(ranks, key: str) -> None:
    """What the two ranks' collectives counted, summed, is the closed form of :mod:`ltxv.parallel.volume`."""
    heads, mode, grid, kind = key.split("_")
    f, h, w = map(int, grid.split("x"))
    cfg = TINY_2B if heads == "2h" else TINY_3_HEADS
    v = call_volume(
        rows=2 if kind == "stg" else 1,
        tokens=f * h * w,
        width=cfg.inner_dim,
        layers=cfg.num_layers,
        out_channels=cfg.out_channels,
        ranks=2,
        mode="ring" if mode in ("ring", "auto") else "ulysses",
        element_bytes=4,
    )
    sent = [r["calls"][key]["sent"] for r in ranks]  # type: ignore[index]
    assert sum(s.pop("gather") for s in sent) == v.gather
    assert sum(sum(s.values()) for s in sent) == v.attention


def test_token_splits() -> None:
    assert token_splits(27, 2) == (14, 13)
    assert token_splits(8, 3) == (3, 3, 2)
    assert token_splits(4, 4) == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="3 tokens cannot be split over 4 ranks"):
        token_splits(3, 4)


def test_attention_core_is_a_self_attention_seam() -> None:
    """The core given to ``run_blocks`` runs every block's self-attention (q, k, v of the tokens, no bias) and nothing
    else; the plain core through the seam is bit-identical to the default path."""
    m = _model()
    call = _call(m, 2, 2, 3, stg=True)
    seen: list[tuple[tuple[int, ...], tuple[int, ...], bool]] = []

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None) -> torch.Tensor:
        seen.append((tuple(q.shape), tuple(k.shape), bias is None))
        return sdpa(q, k, v, heads, bias)

    with torch.inference_mode():
        x, mod, emb = m.embed(call.tokens, call.timesteps)
        skips = m.skip_masks(call.skip_mask, 2, x.dtype)
        out = m.head(m.run_blocks(x, call.text, mod, call.rope, skips, call.skip_strategy, attend=spy), emb)
        assert torch.equal(out, call.run())
    assert seen == [((2, 12, 128), (2, 12, 128), True)] * TINY_2B.num_layers


def test_an_inner_calls_attributes_are_passed_on() -> None:
    """A pipeline collects a step cache's ``report`` from the call it made; wrapped in the split call it still does."""

    class Inner:
        def report(self) -> str:
            return "kept"

    split = SequenceParallel.__new__(SequenceParallel)
    split.inner = Inner()
    assert split.report() == "kept"
    split.inner = None
    assert not hasattr(split, "report")


def test_mode_is_checked_up_front() -> None:
    with pytest.raises(ValueError, match="auto, ulysses, ring"):
        SequenceParallel(None, mode="tree")  # type: ignore[arg-type]


def test_closed_form_at_the_real_13b_shape() -> None:
    """The benchmark's table, one row by hand: 13B (48 x 4096), 1216x704x257 = 33 x 22 x 38 tokens, dev guidance (3
    rows), 2 ranks, bf16: each block moves q, k, v and the output, half of each across, 2 bytes an element."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import parallel_volume

    row = next(
        r
        for r in parallel_volume.closed_form()
        if (r["model"], r["clip"], r["branches"], r["ranks"], r["mode"]) == ("13b", "1216x704x257", 3, 2, "ulysses")
    )
    n = 33 * 22 * 38
    assert row["tokens"] == n == 27588
    attention = 48 * 4 * 3 * n * 4096 // 2 * 2
    gather = 2 * 1 * 3 * (n // 2) * 128 * 2
    assert row["bytes_per_step"] == attention + gather
    assert 65.0e9 < row["bytes_per_step"] < 65.2e9
