"""Timestep schedules of the rectified-flow sampler (study §3.1-3.3).

Time runs from 1 (pure noise) to 0 (data). A schedule is the descending list of times at which the model is called;
the Euler step jumps from the last one straight to 0. Values are float32 tensors because that is what the reference
compares and steps with, so every function below rounds exactly where the reference does (schedules are computed in
Python doubles or float32 tensor ops, then kept in float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ltxv.config import SchedulerConfig

# The reference's SimpleDiffusion shift is relative to this many latent tokens (32x32) when the config names none.
DEFAULT_BASE_TOKENS = 32 * 32


def linear_quadratic(n: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> torch.Tensor:
    """The LinearQuadratic schedule: noise level rises linearly to ``threshold_noise`` over ``linear_steps`` steps,
    then quadratically to 1 (the quadratic continues the linear part with matching slope).

    Computed in doubles and stored as float32, like the reference's ``linear_quadratic_schedule``."""
    if n < 1:
        raise ValueError(f"a schedule needs at least 1 step, got {n}")
    if n == 1:
        return torch.tensor([1.0])
    lin = n // 2 if linear_steps is None else linear_steps
    if not 0 < lin < n:
        raise ValueError(f"linear_steps must be in [1, {n - 1}] for {n} steps, got {lin}")
    quad = n - lin
    excess = lin - threshold_noise * n  # what the quadratic part must add beyond the linear slope
    a = excess / (lin * quad**2)
    b = threshold_noise / lin - 2 * excess / quad**2
    c = a * lin**2
    sigmas = [i * threshold_noise / lin for i in range(lin)]
    sigmas += [a * i**2 + b * i + c for i in range(lin, n)]
    return torch.tensor([1.0 - s for s in sigmas])


def uniform(n: int) -> torch.Tensor:
    """``n`` evenly spaced times from 1 down to ``1/n``."""
    if n < 1:
        raise ValueError(f"a schedule needs at least 1 step, got {n}")
    return torch.linspace(1, 1 / n, n)


def time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    """Shift times towards the noise end: ``e^mu / (e^mu + 1/t - 1)`` (SD3 / Flux shift with sigma = 1)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def constant(n: int, shift: float) -> torch.Tensor:
    """The uniform schedule under a fixed :func:`time_shift` by ``shift``."""
    return time_shift(shift, uniform(n))


def sd3_mu(n_tokens: int) -> float:
    """The SD3 shift for ``n_tokens`` latent tokens: linear from 0.95 at 1024 tokens to 2.05 at 4096."""
    slope = (2.05 - 0.95) / (4096 - 1024)
    return slope * n_tokens + (0.95 - slope * 1024)


def stretch_to_terminal(t: torch.Tensor, terminal: float) -> torch.Tensor:
    """Scale ``1 - t`` so that the last time becomes ``terminal``."""
    if not 0 < terminal < 1:
        raise ValueError(f"target_shift_terminal must be in (0, 1), got {terminal}")
    if t.numel() == 0:
        raise ValueError("cannot stretch an empty schedule")
    rest = 1 - t
    if rest[-1] == 0:  # e.g. a one-step schedule: the reference returns NaN here
        raise ValueError("cannot stretch a schedule that ends at t = 1 to a terminal time")
    return 1 - rest / (rest[-1] / (1 - terminal))


def sd3_shift(t: torch.Tensor, n_tokens: int, target_shift_terminal: float | None = None) -> torch.Tensor:
    """The resolution-dependent SD3 shift (config ``shifting: SD3``), optionally stretched to a terminal time."""
    shifted = time_shift(sd3_mu(n_tokens), t)
    return shifted if target_shift_terminal is None else stretch_to_terminal(shifted, target_shift_terminal)


def simple_diffusion_shift(t: torch.Tensor, n_tokens: int, base_tokens: int = DEFAULT_BASE_TOKENS) -> torch.Tensor:
    """The simple-diffusion shift (config ``shifting: SimpleDiffusion``): log-SNR moved by ``2 log(n / base)``."""
    log_snr = torch.log((t / (1 - t)) ** 2) + 2 * math.log(n_tokens / base_tokens)
    return torch.sigmoid(0.5 * log_snr)


def _base_schedule(config: SchedulerConfig, n: int) -> torch.Tensor:
    if config.sampler == "Uniform":
        return uniform(n)
    if config.sampler == "LinearQuadratic":
        return linear_quadratic(n)
    if config.sampler == "Constant":
        if config.shift is None:
            raise ValueError("the Constant sampler needs a scheduler 'shift'")
        return constant(n, config.shift)
    raise ValueError(f"unknown sampler {config.sampler!r}")


def _shifted(config: SchedulerConfig, t: torch.Tensor, n_tokens: int) -> torch.Tensor:
    if config.shifting is None:
        return t
    if config.shifting == "SD3":
        return sd3_shift(t, n_tokens, config.target_shift_terminal)
    if config.shifting == "SimpleDiffusion":
        return simple_diffusion_shift(t, n_tokens, config.base_resolution or DEFAULT_BASE_TOKENS)
    raise ValueError(f"unknown timestep shifting {config.shifting!r}")


def make_timesteps(
    config: SchedulerConfig,
    num_steps: int,
    n_tokens: int,
    *,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    skip_initial: int = 0,
    skip_final: int = 0,
) -> torch.Tensor:
    """The float32 times one denoising pass calls the model at.

    ``n_tokens`` is the latent F*H*W (used only by resolution shifting). An explicit ``timesteps`` list replaces the
    computed schedule, and then ``num_steps`` and the skip counts are ignored, as in the reference's
    ``retrieve_timesteps``. Otherwise the schedule of ``num_steps`` (capped at ``num_train_timesteps``) is shifted and
    ``skip_initial`` / ``skip_final`` steps are dropped from its ends (image/video-to-video starts later; the dev
    two-pass recipe ends its first pass early)."""
    if timesteps is not None:
        out = torch.as_tensor(timesteps, dtype=torch.float32).flatten()
        if out.numel() == 0:
            raise ValueError("an explicit timesteps list must not be empty")
        return out.clone()
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if skip_initial < 0 or skip_final < 0 or skip_initial + skip_final >= num_steps:
        raise ValueError(
            f"cannot skip {skip_initial} initial and {skip_final} final steps of {num_steps}: both must be >= 0 and "
            "leave at least one step"
        )
    n = min(config.num_train_timesteps, num_steps)
    t = _shifted(config, _base_schedule(config, n), n_tokens)
    return t[skip_initial : len(t) - skip_final].clone()


def check_allowed(timesteps: torch.Tensor | Sequence[float], allowed: Sequence[float]) -> None:
    """Raise if a step, rounded to 4 decimals, is not one the checkpoint allows (distilled checkpoints list the only
    times they were trained on in their metadata ``allowed_inference_steps``)."""
    values = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
    allowed_set = set(allowed)
    for i, t in enumerate(values):
        if round(t, 4) not in allowed_set:
            raise ValueError(
                f"timestep {round(t, 4)} (step {i}) is not allowed by this checkpoint; allowed: {sorted(allowed_set)}"
            )
