"""Samplers: loops over a velocity function, as k-diffusion's ``sample_*`` are loops over a denoiser.

A sampler knows the schedule, the update rule and the conditioning mask; it does not know the network, the guidance
or the text: those live behind the :data:`Velocity` callable it is given (``ltxv.pipelines.denoise.Denoiser``), which
also picks the transformer of each step (hybrid schedules) and may reuse earlier work (step caching).

Two samplers: :func:`sample_rectified_flow` (the reference's loop, every single-clip mode) and
:func:`sample_euler_ancestral_rf` (ComfyUI's ``sample_euler_ancestral_RF`` as diffusers' long-video pipeline runs it,
the window loop of long video).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ltxv.sampling.step import conditioned_update, euler_step, stochastic_step, token_timesteps

# (step index, latents (B, N, C), per-token or per-sample times (B, N) / (B, 1)) -> guided velocity (B, N, C)
Velocity = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
# (step index, t, latents after the step, the step's denoised prediction x0 = x - t v), both (B, N, C)
OnStep = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def sample_rectified_flow(
    velocity: Velocity,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    strength: torch.Tensor | None = None,
    clean: torch.Tensor | None = None,
    image_cond_noise_scale: float = 0.0,
    keep_clean: torch.Tensor | None = None,
    stochastic: bool = False,
    noise: torch.Generator | None = None,
    aux: torch.Generator | None = None,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """The reference's denoising loop (``LTXVideoPipeline.__call__``, study §3.4, §4.3): per-token timesteps
    ``min(t, 1 - strength)``, an Euler (or, with ``stochastic``, a re-noising) step to the next grid value, and only
    the tokens the conditioning mask allows are moved.

    latents (B, N, C); timesteps (S,) float32 descending; ``strength`` (B, N) conditioning strengths (None: nothing
    conditions the pass) with ``clean`` (B, N, C), the state hard-conditioned tokens are reset to before each step,
    plus ``image_cond_noise_scale * eps * t^2`` drawn from ``noise`` (the reference's ``generator``), except the
    ``keep_clean`` (B, N) ones (IC-LoRA control tokens), which stay exactly clean. ``aux`` stands in for the
    reference's global RNG (stochastic sampling's noise). Returns the final latents (B, N, C)."""
    b = latents.shape[0]
    steps = [float(t) for t in timesteps.tolist()]  # the host's copy, read once per pass
    # The schedule on the latents' device once, so the loop copies nothing between host and device.
    timesteps = timesteps.to(device=latents.device, dtype=torch.float32)
    grid = torch.cat([timesteps, timesteps.new_zeros(1)])
    hard = None if strength is None else (strength > 1.0 - 1e-6).unsqueeze(-1)
    noised = hard if hard is None or keep_clean is None else hard & ~keep_clean.unsqueeze(-1)
    if noised is not None and keep_clean is not None and not bool(noised.any()):  # one host read per pass
        noised = None  # only control tokens are hard: nothing to noise, no draws
    for i, t in enumerate(steps):
        t_ = timesteps[i]  # 0-d float32, so the arithmetic below rounds as the reference's does
        if noised is not None and image_cond_noise_scale > 0.0:
            eps = torch.randn(latents.shape, generator=noise, dtype=latents.dtype, device=latents.device)
            latents = torch.where(noised, clean + image_cond_noise_scale * eps * (t_**2), latents)
        t_tok = token_timesteps(t_.reshape(1, 1).expand(b, 1), strength)  # (B, 1) or (B, N)
        v = velocity(i, latents, t_tok)
        t_step = t_tok[:1]  # the reference steps every element with element 0's timesteps
        if stochastic:
            stepped = stochastic_step(latents, v, t_step, grid, generator=aux)
        else:
            stepped = euler_step(latents, v, t_step, grid)
        x0 = None if on_step is None else latents - t_tok.unsqueeze(-1) * v  # before the update overwrites latents
        latents = conditioned_update(latents, stepped, t_, strength)
        if on_step is not None:
            on_step(i, t, latents, x0)  # type: ignore[arg-type]
    return latents


def sample_euler_ancestral_rf(
    velocity: Velocity,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    clean: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """Euler-ancestral for rectified flow, with diffusers' ``LTXI2VLongMultiPromptPipeline`` conditioning
    (control-long.md §1.2): a token's model time is ``sigma * mask`` and every token is stepped with the global sigma,
    then reset towards ``clean`` by its mask.

    latents (B, N, C): the initial state (diffusers: ``mask * eps + (1 - mask) * clean``); sigmas (S,) float32
    descending, the times of the S steps (the last one steps to 0, so S sigmas run S steps); ``mask`` (B, N) in
    [0, 1], 1 = free (None: every token free) with ``clean`` (B, N, C). Per step, in diffusers' order: the model sees
    the state as it is; the state is pre-blended ``x m + clean (1 - m)``; ``x0 = x - sigma v``; the ancestral step to
    the next sigma (``x0`` itself at 0) with fresh noise ``randn(x.shape)`` from ``generator`` in token layout; the
    state is post-blended. The state is float32 whatever the model's dtype (the scheduler's arithmetic is).

    The step: ``sigma_d = s' (1 + (s'/s - 1) eta)``, ``x = (sigma_d/s) x + (1 - sigma_d/s) x0``, then
    ``x = (1 - s')/(1 - sigma_d) x + s_noise eps sqrt(max(0, s'^2 - sigma_d^2 (1 - s')^2 / (1 - sigma_d)^2))``.
    Returns the final state (B, N, C)."""
    steps = [float(s) for s in sigmas.tolist()]  # the host's copy, read once
    if not all(s > 0.0 for s in steps):
        raise ValueError(f"sigmas must be > 0 (the terminal 0 is implied), got {steps}")
    sig = torch.cat([sigmas.to(device=latents.device, dtype=torch.float32), sigmas.new_zeros(1).to(latents.device)])
    x = latents.float()
    m = None if mask is None else mask.to(torch.float32).unsqueeze(-1)  # (B, N, 1)
    z = None if clean is None else clean.float()
    b = x.shape[0]
    for i in range(len(steps)):
        s, s_next = sig[i], sig[i + 1]  # 0-d float32, rounding as the scheduler's tensors do
        t_tok = s.reshape(1, 1).expand(b, 1) if m is None else s * m[..., 0]  # (B, 1) or (B, N)
        v = velocity(i, x, t_tok).float()
        if m is not None:
            x = x * m + z * (1.0 - m)
        x0 = x - s * v
        if i == len(steps) - 1:  # the last step lands on sigma = 0: the prediction itself
            x = x0
        else:
            sigma_down = s_next * (1.0 + (s_next / s - 1.0) * eta)
            ratio = sigma_down / s
            x = ratio * x + (1.0 - ratio) * x0
            if eta > 0.0 and s_noise > 0.0:
                alpha_next, alpha_down = 1.0 - s_next, 1.0 - sigma_down
                renoise = (s_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2).clamp(min=0.0).sqrt()
                eps = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=x.device)
                x = (alpha_next / alpha_down) * x + eps * renoise * s_noise
        if m is not None:
            x = x * m + z * (1.0 - m)
        if on_step is not None:
            on_step(i, steps[i], x, x0)
    return x
