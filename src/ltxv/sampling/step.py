"""The rectified-flow update with per-token timesteps and the conditioning mask (study §3.4, §4.3).

A token sits at time t on the straight line ``x_t = (1 - t) x0 + t eps`` and the model predicts the velocity
``v = eps - x0``. One step moves every token from its own t down to the next lower value of the pass's grid (the
schedule with 0 appended), so tokens that started less noisy (conditioning) join the common schedule on the way.

dtype: nothing here casts. Times and the grid are float32 in the reference, so ``dt`` (and therefore every updated
latent) is float32 even when the velocity is bf16: the reference's running latents become float32 after its first
step. Passing the same dtypes as the reference reproduces its rounding, bit for bit in float32.
"""

from __future__ import annotations

import torch

# A step goes to the largest grid value strictly below t - T_EPS, and a conditioned token is updated once
# t - T_EPS < its noise level; the epsilon absorbs float32 round-off between equal-looking times.
T_EPS = 1e-6


def _as_time(t: torch.Tensor | float, device: torch.device | None) -> torch.Tensor:
    # Python floats become float32 tensors, so `t - T_EPS` rounds as it does on the reference's float32 times.
    return t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.float32, device=device)


def _per_token(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Times shaped like the leading dims of a latent tensor, given trailing singleton dims to broadcast against it."""
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def token_timesteps(t: torch.Tensor | float, strength: torch.Tensor | None) -> torch.Tensor:
    """The time each token is at: ``min(t, 1 - strength)``, (B, N), where ``strength`` (B, N) is the conditioning mask
    (1 = hard-conditioned, clean). Without conditioning, ``t`` itself (e.g. (B, 1))."""
    t = _as_time(t, None if strength is None else strength.device)
    return t if strength is None else torch.min(t, 1.0 - strength)


def step_size(t_tok: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``t - lower`` with ``lower`` the largest grid value strictly below ``t - 1e-6`` (0 if there is none).

    ``t_tok`` has any shape (a 0-d global time, (B,), or per-token (B, N)); the result has the same shape. For a
    descending grid the largest lower value is the next one; the reference's 0-d path takes the first lower value,
    which is the same thing for every schedule it can produce."""
    g = grid.reshape(-1, *([1] * t_tok.ndim))  # (S, *t.shape)
    lower = torch.where(g < t_tok - T_EPS, g, 0.0).amax(dim=0)
    return t_tok - lower


def euler_step(x: torch.Tensor, v: torch.Tensor, t_tok: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Deterministic step ``x - dt v``. x, v (B, N, C); t_tok 0-d, (B,), (1, 1), (B, 1) or (B, N); grid (S + 1,)."""
    dt = step_size(t_tok, grid)
    # A 0-d dt stays 0-d so a bf16 x stays bf16, as in the reference's global-timestep path.
    return x - (_per_token(dt, x.ndim) if dt.ndim else dt) * v


def stochastic_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t_tok: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Predict ``x0 = x - t v``, then re-noise it to the next grid value with fresh Gaussian noise.

    The reference draws that noise with ``randn_like(x)`` from the global RNG; ``generator`` stands in for it (same
    draws when seeded alike). The noise has x's dtype, so a bf16 x consumes the RNG as the reference's first step
    does."""
    t = _per_token(t_tok, x.ndim)
    x0 = x - t * v
    t_next = t - _per_token(step_size(t_tok, grid), x.ndim)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return add_noise(x0, eps, t_next)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The point at time t on the line from x0 to noise: ``(1 - t) x0 + t noise``.

    A tensor t with dims is aligned to the leading dims of x0 (per sample or per token). A 0-d t stays a scalar, so
    bf16 latents stay bf16 as in the reference's ``prepare_latents``."""
    if isinstance(t, torch.Tensor) and t.ndim:
        t = _per_token(t, x0.ndim)
    return (1 - t) * x0 + t * noise


def update_mask(t: torch.Tensor | float, strength: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: the tokens a step may move. A token with conditioning strength s rests at noise level ``1 - s``
    and is only denoised once the global t is below it; hard-conditioned tokens (s = 1) never move."""
    return _as_time(t, strength.device) - T_EPS < (1.0 - strength)


def conditioned_update(
    x: torch.Tensor, stepped: torch.Tensor, t: torch.Tensor | float, strength: torch.Tensor | None
) -> torch.Tensor:
    """The step's result for tokens :func:`update_mask` allows, the old value elsewhere. x, stepped (B, N, C); t is
    the global time of the step (0-d float32, as the reference compares in float32)."""
    if strength is None:
        return stepped
    return torch.where(update_mask(t, strength).unsqueeze(-1), stepped, x)
