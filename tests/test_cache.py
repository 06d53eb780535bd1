"""Step caching (``ltxv.runtime.cache``): off is bit-identical to no cache, ``fbc`` in its diffusers mode equals
diffusers' First Block Cache hook on the same weights, a guidance batch that changes size is cached per branch, and
the report's numbers follow from its decisions."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from ltxv.model.patchify import latent_grid, pixel_positions
from ltxv.model.transformer import Transformer
from ltxv.pipelines.denoise import Denoiser, TextContext, TransformerCall
from ltxv.pipelines.generate import load_pipeline
from ltxv.pipelines.presets import recipe_from_dict
from ltxv.pipelines.request import ConditioningMedia, GenerationRequest, PassSettings, Recipe, RequestError
from ltxv.runtime.cache import CacheConfig, CacheSpecError, StepCache, parse_cache
from ltxv.sampling.samplers import sample_rectified_flow
from ltxv.testing.checkpoints import write_tiny_kit
from ltxv.testing.configs import TINY_2B
from ltxv.testing.random_weights import random_state_dict

CFG = dataclasses.replace(TINY_2B, num_layers=4)
GRID = (2, 3, 4)  # latent f, h, w
FRAME_RATE = 25.0


# --------------------------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("fbc:0.1", CacheConfig("fbc", threshold=0.1)),
        ("FBC:0.2,warmup=5,max_skips=0,force_last=0", CacheConfig("fbc", 0.2, 5, 0, False)),
        ("fbc:0.05,diffusers", CacheConfig("fbc", 0.05, diffusers=True)),
        ("static:2,20,3", CacheConfig("static", start=2, end=20, interval=3)),
        ("static:1,,2", CacheConfig("static", start=1, end=None, interval=2)),
        ("off", None),
        ("", None),
        (None, None),
    ],
)
def test_parse(spec: str | None, want: CacheConfig | None) -> None:
    got = parse_cache(spec)
    assert got == want
    if got is not None:
        assert parse_cache(got.spec) == got  # the canonical spelling reads back


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("fbc", "threshold"),
        ("fbc:x", "numbers"),
        ("fbc:-1", ">= 0"),
        ("fbc:0.1,warm=2", "unknown fbc option"),
        ("static:2,20", "START,END,INTERVAL"),
        ("static:2,20,0", "interval >= 1"),
        ("static:5,2,2", "before its start"),
        ("teacache:0.1", "unknown method"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(CacheSpecError, match=words):
        parse_cache(spec)
    with pytest.raises(RequestError, match=words):  # the request reports it as a request error, before any work
        GenerationRequest("a", cache=spec).validate()


def test_static_schedule_is_the_modelled_systems() -> None:
    """Computed iff outside [start, end] or (s - start) % interval == 0 (caching.md §5)."""
    c = parse_cache("static:2,8,3")
    assert [s for s in range(12) if not c.static_computes(s)] == [3, 4, 6, 7]
    c = parse_cache("static:1,,2")
    assert [s for s in range(8) if not c.static_computes(s)] == [2, 4, 6]


def test_yaml_cache_key_per_pass() -> None:
    """``cache:`` at the top applies to every pass (like every sampling key); a pass may set its own."""
    r = recipe_from_dict(
        {
            "pipeline_type": "multi-scale",
            "cache": "fbc:0.1",
            "first_pass": {"num_inference_steps": 8, "cache": "static:1,4,2"},
            "second_pass": {"num_inference_steps": 3},
        }
    )
    assert (r.first_pass.cache, r.second_pass.cache) == ("static:1,4,2", "fbc:0.1")
    request = GenerationRequest("a", recipe=r)
    assert request.cache_config(0) == parse_cache("static:1,4,2")
    assert dataclasses.replace(request, cache="off").cache_config(0) is None  # the request's choice wins
    with pytest.raises(RequestError, match=r"first_pass\.cache"):
        recipe_from_dict({"first_pass": {"cache": "fbc"}, "second_pass": {}, "pipeline_type": "multi-scale"})


# --------------------------------------------------------------------------------------------------------------------
# Through the pipeline: off is off
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    kit = write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)
    return load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder)


def _request(**kw: object) -> GenerationRequest:
    first = PassSettings(num_inference_steps=8, guidance_scale=3.0, stg_scale=1.0, skip_block_list=(1,))
    second = PassSettings(timesteps=(0.9, 0.5, 0.2), guidance_scale=1.0)
    recipe = Recipe(pipeline_type="multi-scale", first_pass=first, second_pass=second, decode_timestep=0.05)
    return GenerationRequest("a fox", height=96, width=128, num_frames=9, seed=3, recipe=recipe, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def uncached(pipe):
    return pipe.generate(_request())


@pytest.mark.parametrize("spec", ["fbc:0", "static:0,,1", "fbc:1e-12", "fbc:1e-12,diffusers"])
def test_off_settings_are_bit_identical(pipe, uncached, spec: str) -> None:
    """Threshold 0 and interval 1 are the plain call; a threshold nothing passes runs the computed steps in parts
    (embed, block 0, the rest, head), which must not change a bit either."""
    r = pipe.generate(_request(cache=spec))
    assert torch.equal(r.video, uncached.video) and torch.equal(r.latents, uncached.latents)
    assert uncached.cache is None
    assert [p.full_steps for p in r.cache.passes] == [tuple(range(8)), (0, 1, 2)]
    assert r.cache.compute_saved == 0.0


def test_off_is_bit_identical_with_conditioning(pipe, tmp_path) -> None:
    """Per-token timesteps (an image-conditioned request) through the parts path."""
    image = torch.rand(3, 96, 128) * 2 - 1
    request = _request(conditioning=(ConditioningMedia(image, 0, 1.0),))
    want = pipe.generate(request)
    got = pipe.generate(dataclasses.replace(request, cache="fbc:1e-12,warmup=0"))
    assert torch.equal(got.video, want.video)


def test_reuse_changes_the_video_and_reports_it(pipe, uncached) -> None:
    r = pipe.generate(_request(cache="static:1,,3"))
    first, second = r.cache.passes
    assert first.reused_steps == (2, 3, 5, 6) and first.full_steps == (0, 1, 4, 7)
    assert second.reused_steps == (2,)
    # Static skips every block of a reused call: the saved share is reused calls' MACs over all calls' MACs.
    calls = [(rec, p) for p in r.cache.passes for rec in p.steps]
    want = sum(rec.macs for rec, _ in calls if all(rec.reused)) / sum(rec.macs for rec, _ in calls)
    assert r.cache.compute_saved == pytest.approx(want, rel=1e-12)
    assert 0.1 < r.cache.compute_saved < 0.9
    assert r.cache.ideal_speedup == pytest.approx(1 / (1 - r.cache.compute_saved))
    assert not torch.equal(r.video, uncached.video)
    assert (r.video - uncached.video).abs().max() < 0.5


# --------------------------------------------------------------------------------------------------------------------
# One pass by hand: the denoiser and sampler with the same inputs as diffusers gets
# --------------------------------------------------------------------------------------------------------------------


def _model(seed: int = 3) -> tuple[Transformer, dict[str, torch.Tensor]]:
    with torch.device("meta"):
        meta = Transformer(CFG)
    sd = random_state_dict(meta, seed)
    m = Transformer(CFG).eval()
    m.load_state_dict(sd)
    return m, sd


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f, h, w = GRID
    n_text = 6
    return {
        "x": torch.randn(1, f * h * w, CFG.in_channels, generator=g),
        "pos": torch.randn(1, n_text, CFG.caption_channels, generator=g),
        "neg": torch.randn(1, n_text, CFG.caption_channels, generator=g),
        "mask": torch.ones(1, n_text, dtype=torch.int64),
        "positions": pixel_positions(latent_grid(f, h, w, 1), causal_fix=True, frame_rate=1.0),  # frames
    }


def _ours(
    model: Transformer,
    inputs: dict[str, torch.Tensor],
    settings: PassSettings,
    timesteps: list[float],
    call: object = None,
) -> torch.Tensor:
    text = TextContext(inputs["pos"], inputs["mask"], inputs["neg"], inputs["mask"])
    denoiser = Denoiser(
        [("main", model)] * len(timesteps),
        text,
        inputs["positions"].clone(),
        settings,
        timesteps,
        frame_rate=FRAME_RATE,
        stg_mode="attention_values",
        call=call,  # type: ignore[arg-type]
    )
    with torch.inference_mode():
        return sample_rectified_flow(denoiser, inputs["x"], torch.tensor(timesteps))


TIMESTEPS = [1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.55, 0.4, 0.25, 0.1]


@pytest.mark.parametrize("threshold", [0.05, 0.35, 0.5])
def test_fbc_diffusers_mode_equals_diffusers_hook(threshold: float) -> None:
    """The same weights (diffusers' network converted from ours), noise and text; a CFG loop written once for each
    side around diffusers' ``FirstBlockCacheConfig`` hook and around our cache: the same steps computed and the same
    final latents (to the two networks' float difference). Thresholds sit away from every indicator value, so float
    noise cannot flip a decision."""
    pytest.importorskip("diffusers")
    from diffusers.hooks import FirstBlockCacheConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import diffusers_port

    model, sd = _model()
    inputs = _inputs()
    settings = PassSettings(guidance_scale=3.0)
    cache = StepCache(parse_cache(f"fbc:{threshold},diffusers"), len(TIMESTEPS))  # type: ignore[arg-type]
    ours = _ours(model, inputs, settings, TIMESTEPS, cache)
    ours_reused = [all(r.reused) for r in cache.records]

    theirs = diffusers_port.diffusers_transformer(sd, CFG)
    theirs.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    tail_calls = []
    theirs.transformer_blocks[1].ff.register_forward_hook(lambda *a: tail_calls.append(1))
    x = inputs["x"].clone()
    coords = inputs["positions"].clone()
    coords[:, 0] = coords[:, 0] * (1.0 / FRAME_RATE)
    grid = [*TIMESTEPS, 0.0]
    theirs_reused = []
    with torch.inference_mode():
        for i, t in enumerate(TIMESTEPS):
            before = len(tail_calls)
            with theirs.cache_context("cond_uncond"):
                v = theirs(
                    hidden_states=torch.cat([x, x]),
                    encoder_hidden_states=torch.cat([inputs["neg"], inputs["pos"]]),
                    timestep=torch.full((2,), 1000.0 * t),
                    encoder_attention_mask=torch.cat([inputs["mask"], inputs["mask"]]),
                    video_coords=torch.cat([coords, coords]),
                    return_dict=False,
                )[0]
            theirs_reused.append(len(tail_calls) == before)
            uncond, cond = v.chunk(2)
            x = x - torch.tensor(grid[i] - grid[i + 1], dtype=torch.float32) * (uncond + 3.0 * (cond - uncond))
    theirs._reset_stateful_cache()

    assert ours_reused == theirs_reused
    indicators = [r.indicator[0] for r in cache.records if r.indicator[0] is not None]
    assert min(abs(d - threshold) for d in indicators) > 1e-3
    if threshold > 0.3:
        assert sum(ours_reused) >= 2
    assert (ours - x).abs().max() < 1e-4 * x.abs().max()


# --------------------------------------------------------------------------------------------------------------------
# A guidance batch that changes size: state per branch
# --------------------------------------------------------------------------------------------------------------------

# The 13B dev recipe's shape of schedule, shortened: CFG and STG off, then both (batch 3), then STG only (batch 2).
CHANGING = PassSettings(
    guidance_timesteps=(0.95, 0.85, 0.6),
    guidance_scale=(1.0, 3.0, 1.0),
    stg_scale=(0.0, 1.0, 1.0),
    rescaling_scale=(1.0, 0.7, 1.0),
    skip_block_list=((), (2,), (1,)),
)
CHANGING_STEPS = [1.0, 0.98, 0.96, 0.93, 0.91, 0.89, 0.87, 0.8, 0.75, 0.7, 0.65, 0.3]


class _PerBranch:
    """The reference for per-branch state: every guidance branch of a call goes through its own cache as a batch of
    one branch, so no branch can see another's state."""

    def __init__(self, config: CacheConfig, steps: int) -> None:
        self.caches = {b: StepCache(config, steps) for b in ("uncond", "cond", "perturbed")}

    def __call__(self, call: TransformerCall) -> torch.Tensor:
        out = []
        b = call.batch
        for k, name in enumerate(call.branches):
            rows = slice(k * b, (k + 1) * b)
            text = dataclasses.replace(
                call.text,
                kv=tuple((kk[rows], vv[rows]) for kk, vv in call.text.kv),
                bias=None if call.text.bias is None else call.text.bias[rows],
            )
            cos, sin = call.rope
            one = dataclasses.replace(
                call,
                tokens=call.tokens[rows],
                timesteps=call.timesteps[rows],
                text=text,
                rope=(cos, sin) if cos.shape[0] == 1 else (cos[rows], sin[rows]),
                skip_mask=None if call.skip_mask is None or name != "perturbed" else call.skip_mask[:, rows],
                skip_strategy=call.skip_strategy if name == "perturbed" and call.skip_mask is not None else None,
                branches=(name,),
            )
            out.append(self.caches[name](one))
        return torch.cat(out)


@pytest.mark.parametrize("spec", ["fbc:0.33,warmup=1,max_skips=2", "static:1,,2"])
def test_changing_batch_is_cached_per_branch(spec: str) -> None:
    model, _ = _model(5)
    inputs = _inputs(1)
    config = parse_cache(spec)
    cache = StepCache(config, len(CHANGING_STEPS))  # type: ignore[arg-type]
    got = _ours(model, inputs, CHANGING, CHANGING_STEPS, cache)
    reference = _PerBranch(config, len(CHANGING_STEPS))  # type: ignore[arg-type]
    want = _ours(model, inputs, CHANGING, CHANGING_STEPS, reference)
    values = [v for r in cache.records for v in r.indicator if v is not None]
    assert all(abs(v - config.threshold) > 1e-3 for v in values)  # type: ignore[union-attr]
    sizes = [len(r.branches) for r in cache.records]
    assert sizes == [1, 1, 1, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    ref = {name: iter(c.records) for name, c in reference.caches.items()}
    for r in cache.records:
        for name, reused in zip(r.branches, r.reused):
            assert next(ref[name]).reused == (reused,), (r.step, name)
    reused = {(r.step, b) for r in cache.records for b, u in zip(r.branches, r.reused) if u}
    assert reused, "the schedule must reuse something"
    # A branch that was not in the previous step's batch computes: uncond at step 3, perturbed at step 3.
    assert (3, "uncond") not in reused and (3, "perturbed") not in reused
    if config.method == "fbc":  # type: ignore[union-attr]
        assert (3, "cond") in reused  # ... while cond, there before, may reuse: the rest runs on a sub-batch
        assert cache.report().partial_steps
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    plain = _ours(model, inputs, CHANGING, CHANGING_STEPS)
    assert not torch.allclose(got, plain, rtol=1e-5, atol=1e-5)


def test_fbc_guards() -> None:
    """Warm-up steps and the last step compute; no more than max_skips reused steps in a row."""
    model, _ = _model()
    inputs = _inputs()
    steps = TIMESTEPS
    cache = StepCache(parse_cache("fbc:10,warmup=3,max_skips=2"), len(steps))  # type: ignore[arg-type]
    _ours(model, inputs, PassSettings(guidance_scale=1.0), steps, cache)
    reused = [r.reused[0] for r in cache.records]
    assert reused == [False, False, False, True, True, False, True, True, False, False]
    # A reused fbc call still runs block 0: L - 1 of L blocks saved.
    report = cache.report()
    assert report.compute_saved == pytest.approx(4 / 10 * 3 / 4)


def test_wraps_the_call_it_is_given() -> None:
    """Whole steps go to ``inner`` (here the last warm-up step's predecessor and the forced last step); the
    indicator's partial sums go through ``reduce`` once per decided step, so a sequence-parallel caller can sum them
    over its ranks."""
    model, _ = _model()
    inputs = _inputs()
    inner_steps: list[int] = []
    reduced: list[tuple[int, ...]] = []

    def inner(call: TransformerCall) -> torch.Tensor:
        inner_steps.append(call.step)
        return call.run()

    def reduce(t: torch.Tensor) -> torch.Tensor:
        reduced.append(tuple(t.shape))
        return t

    config = parse_cache("fbc:0.35,warmup=2")
    cache = StepCache(config, len(TIMESTEPS), inner=inner, reduce=reduce)  # type: ignore[arg-type]
    settings = PassSettings(guidance_scale=3.0)
    got = _ours(model, inputs, settings, TIMESTEPS, cache)
    assert inner_steps == [0, len(TIMESTEPS) - 1]
    assert reduced == [(2, 2)] * (len(TIMESTEPS) - 3)  # steps 2..8: two branches, (|r - r_ref|, |r_ref|) sums
    again = StepCache(config, len(TIMESTEPS))  # type: ignore[arg-type]
    assert torch.equal(got, _ours(model, inputs, settings, TIMESTEPS, again))
