"""Schedules, the rectified-flow step, guidance and latent ops against closed forms and the reference (fp32, CPU).

The reference's scheduler, ``retrieve_timesteps``, ``denoising_step``, ``tone_map_latents`` and ``adain_filter_latent``
are driven directly; the guidance block is inline in the reference's ``__call__``, so it is transcribed here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ltxv.config import SchedulerConfig
from ltxv.sampling.guidance import (
    active_branches,
    cfg,
    cfg_star_alpha,
    combine,
    guidance_at,
    guidance_index,
    rescale,
    stg,
)
from ltxv.sampling.latent_ops import adain, decode_noise, tone_map
from ltxv.sampling.schedules import (
    check_allowed,
    constant,
    linear_quadratic,
    make_timesteps,
    sd3_shift,
    simple_diffusion_shift,
    uniform,
)
from ltxv.sampling.step import (
    add_noise,
    conditioned_update,
    euler_step,
    step_size,
    stochastic_step,
    token_timesteps,
    update_mask,
)

rf = pytest.importorskip("ltx_video.schedulers.rf")
ref_pipe = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")

LQ8 = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]
LQ30_4DP = [
    1.0, .9983, .9967, .995, .9933, .9917, .99, .9883, .9867, .985, .9833, .9817, .98, .9783, .9767, .975, .9691,
    .9548, .932, .9008, .8611, .813, .7564, .6914, .618, .5361, .4458, .347, .2398, .1241,
]  # fmt: skip


def _ref_scheduler(cfg_: SchedulerConfig) -> rf.RectifiedFlowScheduler:
    return rf.RectifiedFlowScheduler.from_config(cfg_.to_dict())


# --------------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------------


def test_linear_quadratic_closed_forms() -> None:
    torch.testing.assert_close(linear_quadratic(8), torch.tensor(LQ8), rtol=0, atol=1e-7)
    assert [round(t, 4) for t in linear_quadratic(30).tolist()] == LQ30_4DP
    assert linear_quadratic(1).tolist() == [1.0]
    # The linear part ends at 1 - threshold and the quadratic part continues with the same slope.
    t = linear_quadratic(20, threshold_noise=0.05, linear_steps=5).double()
    torch.testing.assert_close(t[:6], 1 - torch.arange(6, dtype=torch.float64) * 0.01, rtol=0, atol=1e-7)
    d = t[:-1] - t[1:]
    assert (d[5:] > d[4:-1]).all()  # strictly accelerating after the linear part


def test_linear_quadratic_matches_reference_bit_for_bit() -> None:
    for n in range(1, 80):
        assert torch.equal(linear_quadratic(n), rf.linear_quadratic_schedule(n)), n
    for n, lin, thr in [(10, 3, 0.025), (30, 10, 0.05), (7, 6, 0.1)]:
        assert torch.equal(linear_quadratic(n, thr, lin), rf.linear_quadratic_schedule(n, thr, lin))


def test_basic_schedules_closed_forms() -> None:
    torch.testing.assert_close(uniform(4), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    # time_shift(mu, t) with t = 1/2 is e^mu / (e^mu + 1).
    c = constant(2, 1.5)
    torch.testing.assert_close(c, torch.tensor([1.0, math.exp(1.5) / (math.exp(1.5) + 1)]))
    # SD3 at 1024 tokens shifts by mu = 0.95; at 4096 by 2.05.
    t = torch.tensor([0.5])
    torch.testing.assert_close(sd3_shift(t, 1024), torch.tensor([math.exp(0.95) / (math.exp(0.95) + 1)]))
    torch.testing.assert_close(sd3_shift(t, 4096), torch.tensor([math.exp(2.05) / (math.exp(2.05) + 1)]))
    # Stretching puts the last value exactly on the terminal.
    assert sd3_shift(uniform(10), 5000, target_shift_terminal=0.1)[-1].item() == pytest.approx(0.1, abs=1e-6)
    # SimpleDiffusion at the base token count is the identity; 4x the tokens doubles the odds t / (1 - t).
    u = torch.tensor([0.2, 0.5, 0.8])
    torch.testing.assert_close(simple_diffusion_shift(u, 1024), u)
    torch.testing.assert_close(simple_diffusion_shift(u, 4096) / (1 - simple_diffusion_shift(u, 4096)), 4 * u / (1 - u))


SCHEDULER_CONFIGS = [
    SchedulerConfig(sampler="LinearQuadratic"),
    SchedulerConfig(sampler="Uniform"),
    SchedulerConfig(sampler="Constant", shift=2.5),
    SchedulerConfig(sampler="Uniform", shifting="SD3"),
    SchedulerConfig(sampler="Uniform", shifting="SD3", target_shift_terminal=0.1),
    SchedulerConfig(sampler="LinearQuadratic", shifting="SD3", target_shift_terminal=0.05),
    SchedulerConfig(sampler="Uniform", shifting="SimpleDiffusion", base_resolution=1024),
    SchedulerConfig(sampler="LinearQuadratic", shifting="SimpleDiffusion", base_resolution=512),
]


@pytest.mark.parametrize(
    "config", SCHEDULER_CONFIGS, ids=lambda c: f"{c.sampler}-{c.shifting}-{c.target_shift_terminal}"
)
def test_make_timesteps_matches_reference_scheduler(config: SchedulerConfig) -> None:
    for n, shape, skip in [
        (8, (1, 128, 2, 4, 4), (0, 0)),
        (30, (1, 128, 16, 14, 25), (0, 3)),
        (30, (2, 128, 16, 28, 50), (17, 0)),
        (40, (1, 128, 5, 16, 24), (2, 5)),
        (1, (1, 128, 1, 1, 1), (0, 0)),
    ]:
        if n == 1 and config.target_shift_terminal is not None:  # the reference gives NaN, we raise
            with pytest.raises(ValueError, match="terminal"):
                make_timesteps(config, n, math.prod(shape[2:]))
            continue
        sched = _ref_scheduler(config)
        want, _ = ref_pipe.retrieve_timesteps(
            sched, n, "cpu", None, skip_initial_inference_steps=skip[0], skip_final_inference_steps=skip[1],
            samples_shape=shape,
        )  # fmt: skip
        got = make_timesteps(config, n, math.prod(shape[2:]), skip_initial=skip[0], skip_final=skip[1])
        assert got.dtype == torch.float32 and torch.equal(got, want), (n, shape, skip)


def test_make_timesteps_explicit_list_and_skip_errors() -> None:
    config = SchedulerConfig(sampler="LinearQuadratic", shifting="SD3")
    explicit = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725]
    sched = _ref_scheduler(config)
    want, _ = ref_pipe.retrieve_timesteps(sched, None, "cpu", explicit, samples_shape=(1, 128, 2, 4, 4))
    # An explicit list overrides steps, shifting and skipping, as in the reference.
    got = make_timesteps(config, 99, 32, timesteps=explicit, skip_initial=3)
    assert torch.equal(got, want)
    for skip in [(-1, 0), (0, -1), (5, 3), (8, 0)]:
        with pytest.raises(ValueError):
            ref_pipe.retrieve_timesteps(
                _ref_scheduler(config), 8, "cpu", None, skip_initial_inference_steps=skip[0],
                skip_final_inference_steps=skip[1], samples_shape=(1, 128, 2, 4, 4),
            )  # fmt: skip
        with pytest.raises(ValueError, match="skip"):
            make_timesteps(config, 8, 32, skip_initial=skip[0], skip_final=skip[1])
    assert make_timesteps(config, 8, 32, skip_initial=4, skip_final=3).numel() == 1
    with pytest.raises(ValueError, match="shift"):
        make_timesteps(SchedulerConfig(sampler="Constant"), 8, 32)


def test_check_allowed_names_the_offending_step() -> None:
    allowed = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]
    check_allowed(linear_quadratic(8), allowed)  # LQ(8) rounds onto the distilled list
    check_allowed(torch.tensor([0.9094, 0.725, 0.4219]), allowed)
    with pytest.raises(ValueError, match=r"0\.9 \(step 1\)"):
        check_allowed(torch.tensor([1.0, 0.9]), allowed)
    with pytest.raises(ValueError, match=r"step 7"):
        check_allowed(linear_quadratic(10)[:1].tolist() * 7 + [0.5], allowed)


# --------------------------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------------------------


def _step_setup(
    n_tokens: int = 24, channels: int = 8, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_tokens, channels, generator=g)
    v = torch.randn(1, n_tokens, channels, generator=g)
    # Tokens conditioned with strength 1 (hard), 0.5, 0.05, and unconditioned.
    strength = torch.tensor([1.0, 0.5, 0.05] + [0.0] * (n_tokens - 3))[None]
    return x, v, strength


def _ref_set(n: int, config: SchedulerConfig | None = None) -> rf.RectifiedFlowScheduler:
    sched = _ref_scheduler(config or SchedulerConfig(sampler="LinearQuadratic"))
    sched.set_timesteps(n, samples_shape=(1, 128, 1, 1, 1))
    return sched


def test_step_size_closed_form() -> None:
    grid = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    t = torch.tensor([[1.0, 0.75 + 5e-7, 0.75 + 2e-6, 0.6, 0.25, 0.1, 0.0]])
    # Next lower grid value strictly below t - 1e-6; a time within 1e-6 above a grid value skips it.
    torch.testing.assert_close(step_size(t, grid), t - torch.tensor([[0.75, 0.5, 0.75, 0.5, 0.0, 0.0, 0.0]]))
    assert step_size(torch.tensor(0.5), grid).ndim == 0


@pytest.mark.parametrize("stochastic", [False, True])
def test_step_matches_reference_scheduler(stochastic: bool) -> None:
    sched = _ref_set(8)
    grid = torch.cat([sched.timesteps, torch.zeros(1)])
    x, v, strength = _step_setup()
    for i, t in enumerate(sched.timesteps):
        cases = {
            "global": t,  # 0-d
            "pipeline, unconditioned": t[None].expand(1).unsqueeze(-1),  # (1, 1) as the pipeline passes it
            "per-token": torch.min(t[None].expand(1).unsqueeze(-1), 1.0 - strength),  # (1, N)
        }
        for name, t_tok in cases.items():
            torch.manual_seed(100 + i)
            want = sched.step(v, t_tok, x, return_dict=False, stochastic_sampling=stochastic)[0]
            if stochastic:
                got = stochastic_step(x, v, t_tok, grid, generator=torch.Generator().manual_seed(100 + i))
            else:
                got = euler_step(x, v, t_tok, grid)
            assert got.shape == want.shape and torch.equal(got, want), (i, name)


@pytest.mark.parametrize("stochastic", [False, True])
def test_step_reproduces_the_reference_dtype_flow(stochastic: bool) -> None:
    """bf16 latents and velocity, float32 times: the result (and the noise draw) follow the reference."""
    sched = _ref_set(8)
    grid = torch.cat([sched.timesteps, torch.zeros(1)])
    x, v, strength = _step_setup()
    x, v = x.bfloat16(), v.bfloat16()
    t_tok = torch.min(sched.timesteps[2][None, None], 1.0 - strength)
    torch.manual_seed(7)
    want = sched.step(v, t_tok, x, return_dict=False, stochastic_sampling=stochastic)[0]
    if stochastic:
        got = stochastic_step(x, v, t_tok, grid, generator=torch.Generator().manual_seed(7))
    else:
        got = euler_step(x, v, t_tok, grid)
    assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)
    # The 0-d (global) path keeps bf16 for the deterministic step, as the reference's does.
    want = sched.step(v, sched.timesteps[2], x, return_dict=False)[0]
    got = euler_step(x, v, sched.timesteps[2], grid)
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_euler_closed_form_lands_on_data() -> None:
    """With the exact velocity eps - x0, Euler from x_1 = eps reaches x0 through every schedule point."""
    g = torch.Generator().manual_seed(3)
    x0, eps = (
        torch.randn(2, 10, 4, generator=g, dtype=torch.float64),
        torch.randn(2, 10, 4, generator=g, dtype=torch.float64),
    )
    ts = linear_quadratic(8).double()
    grid = torch.cat([ts, torch.zeros(1, dtype=torch.float64)])
    x = add_noise(x0, eps, ts[0])
    for i, t in enumerate(ts):
        x = euler_step(x, eps - x0, t.expand(2), grid)  # (B,) per-sample times
        torch.testing.assert_close(x, add_noise(x0, eps, grid[i + 1]))
    torch.testing.assert_close(x, x0)


def test_add_noise_matches_reference() -> None:
    sched = _ref_set(8)
    x, v, _ = _step_setup()
    for t in [torch.tensor([0.3]), torch.tensor([[0.3]]), torch.rand(1, 24)]:
        assert torch.equal(add_noise(x, v, t), sched.add_noise(x, v, t))
    # A 0-d time is a scalar: the reference's prepare_latents form t * eps + (1 - t) x.
    t = sched.timesteps[3]
    xb, vb = x.bfloat16(), v.bfloat16()
    assert torch.equal(add_noise(xb, vb, t), t * vb + (1 - t) * xb)
    assert add_noise(xb, vb, t).dtype == torch.bfloat16


def test_token_timesteps_and_update_mask() -> None:
    _, _, strength = _step_setup()
    t = torch.tensor(0.975)
    got = token_timesteps(t[None, None], strength)
    assert torch.equal(got, torch.min(t[None].expand(1).unsqueeze(-1), 1.0 - strength))  # the pipeline's form
    assert got[0, :4].tolist() == pytest.approx([0.0, 0.5, 0.95, 0.975])
    assert token_timesteps(t, None) is t
    assert update_mask(t, strength)[0, :4].tolist() == [False, False, False, True]
    assert update_mask(0.95, strength)[0, :4].tolist() == [False, False, True, True]  # 0.95 - 1e-6 < 0.95
    assert update_mask(torch.tensor(0.9), strength)[0, :4].tolist() == [False, False, True, True]


def test_conditioned_loop_matches_reference_denoising_step() -> None:
    """A whole pass (LQ(8), conditioning strengths 1 / 0.5 / 0.05 / 0) against the reference's denoising_step, with a
    deterministic stand-in for the model, bit for bit; stochastic and deterministic."""
    for stochastic in (False, True):
        sched = _ref_set(8)
        fake_pipe = SimpleNamespace(scheduler=sched)
        grid = torch.cat([sched.timesteps, torch.zeros(1)])
        x, _, strength = _step_setup(seed=5)
        ours, theirs = x.clone(), x.clone()
        gen = torch.Generator().manual_seed(11)
        torch.manual_seed(11)
        for t in sched.timesteps:
            t_tok = torch.min(t[None].expand(1).unsqueeze(-1), 1.0 - strength)
            v_ref = torch.tanh(theirs) * (1 + t_tok[..., None])  # depends on the state and the per-token time
            theirs = ref_pipe.LTXVideoPipeline.denoising_step(
                fake_pipe, theirs, v_ref, t_tok[:1], strength, t, {}, stochastic_sampling=stochastic
            )
            t_ours = token_timesteps(t[None, None], strength)
            v = torch.tanh(ours) * (1 + t_ours[..., None])
            step = stochastic_step(ours, v, t_ours[:1], grid, generator=gen) if stochastic else None
            ours = conditioned_update(ours, step if stochastic else euler_step(ours, v, t_ours[:1], grid), t, strength)
            assert torch.equal(ours, theirs)
        assert torch.equal(ours[0, 0], x[0, 0])  # the hard-conditioned token never moved
        assert not torch.equal(ours[0, 1], x[0, 1])  # the soft one joined once t fell below 0.5


# --------------------------------------------------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------------------------------------------------


def _reference_guidance(
    noise_pred: torch.Tensor, batch_size: int, g: float, s: float, r: float, cfg_star: bool
) -> torch.Tensor:
    """The reference ``__call__``'s guidance block (pipeline_ltx_video.py:1219-1262), transcribed."""
    do_cfg, do_stg, do_rescaling = g > 1.0, s > 0, r != 1.0
    num_conds = 1 + do_cfg + do_stg
    if do_stg:
        text, perturb = noise_pred.chunk(num_conds)[-2:]
    if do_cfg:
        uncond, text = noise_pred.chunk(num_conds)[:2]
        if cfg_star:
            pf, nf = text.view(batch_size, -1), uncond.view(batch_size, -1)
            alpha = torch.sum(pf * nf, dim=1, keepdim=True) / (torch.sum(nf**2, dim=1, keepdim=True) + 1e-8)
            uncond = alpha * uncond
        noise_pred = uncond + g * (text - uncond)
    elif do_stg:
        noise_pred = text
    if do_stg:
        noise_pred = noise_pred + s * (text - perturb)
        if do_rescaling and s > 0.0:
            factor = text.view(batch_size, -1).std(dim=1, keepdim=True) / noise_pred.view(batch_size, -1).std(
                dim=1, keepdim=True
            )
            factor = r * factor + (1 - r)
            noise_pred = noise_pred * factor.view(batch_size, 1, 1)
    return noise_pred


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_combine_matches_reference_branch_logic(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    branches = {k: torch.randn(1, 30, 16, generator=g).to(dtype) for k in ("uncond", "cond", "perturbed")}
    branches["uncond"] = 0.6 * branches["cond"] + 0.4 * branches["uncond"]  # correlated, like real predictions
    for cfg_scale in (1.0, 3.0, 8.0):
        for stg_scale in (0.0, 1.0, 4.0):
            for r in (1.0, 0.7, 0.5, 0.0):
                for star in (False, True):
                    active = active_branches(cfg_scale, stg_scale)
                    stacked = torch.cat([branches[k] for k in active]) if len(active) > 1 else branches["cond"]
                    want = _reference_guidance(stacked, 1, cfg_scale, stg_scale, r, star)
                    got = combine(
                        branches["uncond"] if "uncond" in active else None,
                        branches["cond"],
                        branches["perturbed"] if "perturbed" in active else None,
                        cfg_scale=cfg_scale,
                        stg_scale=stg_scale,
                        rescale=r,
                        cfg_star=star,
                    )
                    assert got.dtype == dtype and torch.equal(got, want), (cfg_scale, stg_scale, r, star)


def test_guidance_terms_closed_forms() -> None:
    g = torch.Generator().manual_seed(4)
    cond, other = (
        torch.randn(2, 20, 8, generator=g, dtype=torch.float64),
        torch.randn(2, 20, 8, generator=g, dtype=torch.float64),
    )
    torch.testing.assert_close(cfg(cond, other, 1.0), cond)
    torch.testing.assert_close(cfg(cond, other, 3.0), 3 * cond - 2 * other)
    assert torch.equal(stg(other, cond, cond, 5.0), other)
    # CFG*: a scaled copy of cond as uncond projects back to cond, per batch element.
    uncond = torch.stack([2.0 * cond[0], -0.5 * cond[1]])
    alpha = cfg_star_alpha(cond, uncond)
    assert alpha.shape == (2, 1, 1)
    torch.testing.assert_close(alpha.flatten(), torch.tensor([0.5, -2.0], dtype=torch.float64))
    torch.testing.assert_close(alpha * uncond, cond)
    # The 1e-8 in the denominator: |uncond|^2 = 1e-8 halves alpha; a zero uncond gives alpha 0, not NaN.
    one = torch.ones(1, 1, 1, dtype=torch.float64)
    assert cfg_star_alpha(one, 1e-4 * one).item() == pytest.approx(1e-4 / 2e-8)
    assert cfg_star_alpha(one, 0 * one).item() == 0.0
    # Rescale by r moves std(v) to r std(cond) + (1 - r) std(v), per batch element.
    v = 3.0 * other
    out = rescale(v, cond, 0.7)
    std = lambda x: x.reshape(2, -1).std(dim=1)  # noqa: E731
    torch.testing.assert_close(std(out), 0.7 * std(cond) + 0.3 * std(v))
    # Rescale is STG-only: with CFG alone it is ignored whatever its value.
    assert torch.equal(
        combine(other, cond, None, cfg_scale=3.0, stg_scale=0.0, rescale=0.5, cfg_star=False), cfg(cond, other, 3.0)
    )
    # STG alone starts from cond.
    assert torch.equal(
        combine(None, cond, other, cfg_scale=1.0, stg_scale=2.0, rescale=1.0, cfg_star=True),
        stg(cond, cond, other, 2.0),
    )
    with pytest.raises(ValueError, match="unconditional"):
        combine(None, cond, None, cfg_scale=2.0, stg_scale=0.0, rescale=1.0, cfg_star=False)
    with pytest.raises(ValueError, match="perturbed"):
        combine(None, cond, None, cfg_scale=1.0, stg_scale=1.0, rescale=1.0, cfg_star=False)


def test_active_branches_follow_the_reference_batch_layout() -> None:
    assert active_branches(3.0, 1.0) == ("uncond", "cond", "perturbed")
    assert active_branches(3.0, 0.0) == ("uncond", "cond")
    assert active_branches(1.0, 1.0) == ("cond", "perturbed")
    assert active_branches(1.0, 0.0) == ("cond",)
    assert active_branches(0.5, -1.0) == ("cond",)


# configs/ltxv-13b-0.9.8-dev.yaml, first pass.
DEV_GUIDANCE_TIMESTEPS = [1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180]
DEV_CFG = [1, 1, 6, 8, 6, 1, 1]
DEV_STG = [0, 0, 4, 4, 4, 2, 1]
DEV_RESCALE = [1, 1, 0.5, 0.5, 1, 1, 1]
DEV_BLOCKS = [[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]]
# The index each step of LQ(30)[0:27] uses. Study §4.7's table rounds LQ(30)[14] = 0.97667 and [19] = 0.90078 to
# 4 decimals and so puts them one row early; the reference's comparison puts them in rows 5 and 6.
DEV_TABLE_IDX = [0, 1, 1, 2, 2] + [3] * 5 + [4] * 4 + [5] * 5 + [6] * 8


def test_guidance_at_reproduces_the_dev_13b_table() -> None:
    steps = make_timesteps(SchedulerConfig(sampler="LinearQuadratic"), 30, 5600, skip_final=3)
    assert len(steps) == 27
    idx = [guidance_index(t, DEV_GUIDANCE_TIMESTEPS) for t in steps]
    assert idx == DEV_TABLE_IDX
    # The same with Python floats (e.g. from .tolist()) and with the reference's own mapping loop.
    assert [guidance_index(t, DEV_GUIDANCE_TIMESTEPS) for t in steps.tolist()] == DEV_TABLE_IDX
    ref_idx = [next((i for i, g in enumerate(DEV_GUIDANCE_TIMESTEPS) if g <= t), 6) for t in steps]
    assert idx == ref_idx
    for t, i in zip(steps, idx):
        assert guidance_at(t, DEV_GUIDANCE_TIMESTEPS, DEV_CFG) == DEV_CFG[i]
        assert guidance_at(t, DEV_GUIDANCE_TIMESTEPS, DEV_STG) == DEV_STG[i]
        assert guidance_at(t, DEV_GUIDANCE_TIMESTEPS, DEV_RESCALE) == DEV_RESCALE[i]
        assert guidance_at(t, DEV_GUIDANCE_TIMESTEPS, DEV_BLOCKS, blocks=True) == DEV_BLOCKS[i]
    # Rows of the table: (t, cfg, stg, rescale, skip blocks).
    at = {round(float(t), 4): t for t in steps}
    for t, want in [
        (1.0, (1, 0, 1, [])),
        (0.9967, (1, 0, 1, [11, 25, 35, 39])),
        (0.995, (6, 4, 0.5, [22, 35, 39])),
        (0.9933, (6, 4, 0.5, [22, 35, 39])),
        (0.985, (8, 4, 0.5, [28])),
        (0.9783, (6, 4, 1, [28])),
        (0.9767, (1, 2, 1, [28])),
        (0.932, (1, 2, 1, [28])),
        (0.9008, (1, 1, 1, [28])),
        (0.4458, (1, 1, 1, [28])),
    ]:
        tt = at[t]
        got = tuple(guidance_at(tt, DEV_GUIDANCE_TIMESTEPS, v) for v in (DEV_CFG, DEV_STG, DEV_RESCALE))
        assert (*got, guidance_at(tt, DEV_GUIDANCE_TIMESTEPS, DEV_BLOCKS, blocks=True)) == want, t
    # Second pass: one-entry lists and a flat block list (the same for every step).
    for t in make_timesteps(SchedulerConfig(sampler="LinearQuadratic"), 30, 22400, skip_initial=17):
        assert guidance_at(t, [1.0], [1]) == 1
        assert guidance_at(t, [1.0], [27], blocks=True) == [27]


def test_guidance_at_compares_in_float32() -> None:
    # 0.9008 is not a float32; the reference compares float32(0.9008) <= float32 t, which holds for t = that float32.
    t = torch.tensor(0.9008)
    assert float(t) < 0.9008
    assert guidance_index(t, [1.0, 0.9008, 0.5]) == 1
    assert guidance_index(float(t), [1.0, 0.9008, 0.5]) == 1
    assert guidance_index(0.1, [1.0, 0.9008, 0.5]) == 2  # none below: the last index


def test_guidance_at_scalars_and_errors() -> None:
    assert guidance_at(0.5, None, 3.0) == 3.0
    assert guidance_at(0.5, None, None, blocks=True) is None
    assert guidance_at(0.5, None, [19], blocks=True) == [19]
    assert guidance_at(0.5, None, [], blocks=True) == []
    with pytest.raises(ValueError, match="guidance_timesteps"):
        guidance_at(0.5, None, [1.0, 2.0])
    with pytest.raises(ValueError, match="does not match"):
        guidance_at(0.5, [1.0, 0.5], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------------------------------------------------
# Latent ops
# --------------------------------------------------------------------------------------------------------------------


def test_adain_matches_reference() -> None:
    g = torch.Generator().manual_seed(6)
    low = torch.randn(1, 16, 3, 7, 9, generator=g) * 0.8 + 0.3
    up = torch.randn(1, 16, 3, 14, 18, generator=g) * 2.0 - 1.0
    for factor in (1.0, 0.5, -0.25):
        assert torch.equal(adain(up, low, factor), ref_pipe.adain_filter_latent(up, low, factor))
    out = adain(up, low)
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), low.mean(dim=(2, 3, 4)), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.std(dim=(2, 3, 4)), low.std(dim=(2, 3, 4)), rtol=1e-5, atol=0)
    up2 = torch.randn(2, 4, 2, 4, 4, generator=g)
    assert torch.equal(adain(up2, up2.flip(0)), ref_pipe.adain_filter_latent(up2, up2.flip(0)))
    with pytest.raises(ValueError, match="differ"):
        adain(up2, low)


def test_tone_map_matches_reference() -> None:
    x = torch.linspace(-6, 6, 2001).reshape(1, 1, 1, 1, -1) * torch.ones(1, 3, 1, 1, 1)
    for ratio in (0.0, 0.3, 0.6, 1.0):
        assert torch.equal(tone_map(x, ratio), ref_pipe.LTXVideoPipeline.tone_map_latents(x, ratio))
    # Closed form at |x| = 1: the sigmoid is 1/2, so x (1 - 0.4 s).
    assert tone_map(torch.tensor([1.0, -1.0]), 1.0).tolist() == pytest.approx([1 - 0.3, -(1 - 0.3)])
    with pytest.raises(ValueError):
        tone_map(x, 1.5)


def test_decode_noise_matches_reference() -> None:
    # As in the reference, the latents are the unpatchified token view "b (f h w) c -> b c f h w" (non-contiguous),
    # which is what makes randn_like take torch's serial sampler.
    tokens = torch.randn(2, 2 * 3 * 3, 4, generator=torch.Generator().manual_seed(8))
    latents = tokens.reshape(2, 2, 3, 3, 4).permute(0, 4, 1, 2, 3)
    assert not latents.is_contiguous()
    for scale in (0.025, [0.025, 0.05]):
        torch.manual_seed(9)
        noise = torch.randn_like(latents)
        scales = scale if isinstance(scale, list) else [scale] * 2
        s = torch.tensor(scales)[:, None, None, None, None]
        want = latents * (1 - s) + noise * s  # pipeline_ltx_video.py:1304-1322
        assert torch.equal(decode_noise(latents, scale, torch.Generator().manual_seed(9)), want)
    with pytest.raises(ValueError):
        decode_noise(latents, [0.1, 0.2, 0.3], None)
