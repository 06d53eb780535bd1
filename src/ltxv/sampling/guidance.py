"""Guidance as small pure functions: CFG (with the CFG* rescale), STG and the STG-only std rescale (study §4.7).

:func:`combine` reproduces the reference's branch logic term for term: ``v = uncond + g (cond - uncond)`` when CFG is
on, else ``cond``; then, only when STG is on, ``v += s (cond - perturbed)`` followed by the std rescale. The rescale
never runs without STG, even when ``rescaling_scale != 1`` (the reference nests it inside the STG branch).

The arithmetic is written in the reference's order so that it rounds identically in any dtype (the reference does
guidance in the transformer's output dtype, bf16 in production).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

Branch = Literal["uncond", "cond", "perturbed"]


def active_branches(cfg_scale: float, stg_scale: float) -> tuple[Branch, ...]:
    """The model outputs a step needs, in batch order: CFG needs the unconditional one (scale > 1), STG the perturbed
    one (scale > 0); the conditional one is always run."""
    out: tuple[Branch, ...] = ("uncond",) if cfg_scale > 1.0 else ()
    out += ("cond",)
    if stg_scale > 0.0:
        out += ("perturbed",)
    return out


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)  # (B, N*C)


def _broadcast(stat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return stat.reshape(stat.shape[0], *([1] * (like.ndim - 1)))


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def cfg_star_alpha(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """CFG*: the projection coefficient of cond on uncond, ``<cond, uncond> / (|uncond|^2 + 1e-8)``, per batch
    element over all tokens and channels; shaped (B, 1, ...) to scale ``uncond``.

    Per element for any batch size; the reference's (B, 1) alpha only broadcasts correctly for B = 1."""
    c, u = _per_sample(cond), _per_sample(uncond)
    alpha = torch.sum(c * u, dim=1, keepdim=True) / (torch.sum(u**2, dim=1, keepdim=True) + 1e-8)  # (B, 1)
    return _broadcast(alpha, uncond)


def stg(v: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, scale: float) -> torch.Tensor:
    """Spatio-temporal guidance: push ``v`` away from the prediction of the layer-perturbed model."""
    return v + scale * (cond - perturbed)


def rescale(v: torch.Tensor, cond: torch.Tensor, r: float) -> torch.Tensor:
    """Pull the std of ``v`` towards that of ``cond`` (unbiased std per batch element over tokens x channels):
    ``v * (r std(cond) / std(v) + 1 - r)``. Counters the over-saturation of large guidance."""
    factor = _per_sample(cond).std(dim=1, keepdim=True) / _per_sample(v).std(dim=1, keepdim=True)  # (B, 1)
    factor = r * factor + (1 - r)
    return v * _broadcast(factor, v)


_std_rescale = rescale  # combine() takes a parameter of the same name


def combine(
    uncond: torch.Tensor | None,
    cond: torch.Tensor,
    perturbed: torch.Tensor | None,
    *,
    cfg_scale: float,
    stg_scale: float,
    rescale: float,
    cfg_star: bool,
) -> torch.Tensor:
    """The guided velocity of one step from the branches :func:`active_branches` asked for (others may be None)."""
    branches = active_branches(cfg_scale, stg_scale)
    if "uncond" in branches and uncond is None:
        raise ValueError(f"cfg_scale={cfg_scale} needs the unconditional prediction")
    if "perturbed" in branches and perturbed is None:
        raise ValueError(f"stg_scale={stg_scale} needs the perturbed prediction")
    v = cond
    if uncond is not None and "uncond" in branches:
        if cfg_star:
            uncond = cfg_star_alpha(cond, uncond) * uncond
        v = cfg(cond, uncond, cfg_scale)
    if perturbed is not None and "perturbed" in branches:
        v = stg(v, cond, perturbed, stg_scale)
        if rescale != 1.0:
            v = _std_rescale(v, cond, rescale)
    return v


def guidance_index(t: torch.Tensor | float, guidance_timesteps: Sequence[float]) -> int:
    """The reference's per-step list index: the first i with ``guidance_timesteps[i] <= t``, else the last index.

    Compared in float32, as the reference compares its float32 timestep tensor with the config's Python floats."""
    if not guidance_timesteps:
        raise ValueError("guidance_timesteps must not be empty")
    t32 = torch.as_tensor(t, dtype=torch.float32).cpu()
    hits = (torch.tensor(list(guidance_timesteps), dtype=torch.float32) <= t32).nonzero()
    return int(hits[0]) if len(hits) else len(guidance_timesteps) - 1


def guidance_at(
    t: torch.Tensor | float, guidance_timesteps: Sequence[float] | None, value: Any, *, blocks: bool = False
) -> Any:
    """A guidance setting at time t.

    Without ``blocks`` (guidance_scale, stg_scale, rescaling_scale): a scalar applies to every step, a list is
    indexed with :func:`guidance_index`. With ``blocks`` (skip_block_list): None or a flat list of block indices
    applies to every step, a list of lists is indexed."""
    if blocks:
        per_step = bool(value) and isinstance(value[0], (list, tuple))
    else:
        per_step = isinstance(value, (list, tuple))
    if not per_step:
        return value
    if guidance_timesteps is None:
        raise ValueError(f"the per-step guidance list {list(value)} needs guidance_timesteps")
    if len(value) != len(guidance_timesteps):
        raise ValueError(f"per-step guidance list {list(value)} does not match guidance_timesteps {guidance_timesteps}")
    return value[guidance_index(t, guidance_timesteps)]
