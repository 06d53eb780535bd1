"""One denoising pass: the rectified-flow loop with per-token timesteps, batched guidance and conditioning tokens.

Numerically this is the reference's ``LTXVideoPipeline.__call__`` loop (study §3.4, §4.3, §4.7). Differences, on
purpose:
- RoPE tables and the fractional positions are computed once per pass, not per step.
- Guidance branches are laid out branch-major ``[uncond..., cond..., perturbed...]`` and the STG skip mask marks the
  perturbed *branch* for every batch element. The reference marks ``ptb_index::num_conds`` (batch-major) over a
  branch-major batch, which perturbs the wrong samples when the batch is larger than 1 (study §7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ltxv.conditioning.state import LatentState
from ltxv.model.transformer import PreparedText, SkipLayerStrategy, Transformer
from ltxv.pipelines.request import PassSettings
from ltxv.sampling.guidance import active_branches, combine, guidance_at
from ltxv.sampling.step import conditioned_update, euler_step, stochastic_step, token_timesteps

StepCallback = Callable[[int, int, float], None]  # (step index, number of steps, t)


@dataclass(frozen=True)
class TextContext:
    """Encoded prompts, (B, L, D) each, with their 0/1 masks (B, L)."""

    positive: torch.Tensor
    positive_mask: torch.Tensor
    negative: torch.Tensor
    negative_mask: torch.Tensor

    def trimmed(self) -> TextContext:
        """Without the padding columns after the longest prompt's last token (T5 pads on the right).

        A padding token's cross-attention score gets the -10000 mask bias, so its softmax weight is exp(-10000) = 0
        exactly: dropping it changes the output only by the order of summation (float rounding), and the 256-token
        text shrinks to the prompts' length (a typical prompt: 30-80 tokens), the cross-attention with it."""
        used = torch.cat([self.positive_mask, self.negative_mask]).any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else self.positive_mask.shape[1]  # one host read, once per pass
        return TextContext(
            self.positive[:, :keep], self.positive_mask[:, :keep], self.negative[:, :keep], self.negative_mask[:, :keep]
        )


@dataclass(frozen=True)
class StepGuidance:
    cfg: float
    stg: float
    rescale: float
    blocks: tuple[int, ...]


def skip_layer_mask(num_layers: int, n_branches: int, batch: int, blocks: tuple[int, ...]) -> torch.Tensor:
    """(num_layers, n_branches * batch), 0 where a sample is perturbed. The batch is branch-major, the perturbed branch
    last, so every element of the last branch is perturbed in ``blocks`` (the reference's ``ptb_index::num_conds``
    indexing assumes batch-major and perturbs the wrong samples once batch > 1)."""
    bad = [i for i in blocks if not 0 <= i < num_layers]
    if bad:
        raise ValueError(
            f"skip_block_list names block(s) {bad}, but the transformer has {num_layers} (0..{num_layers - 1})"
        )
    mask = torch.ones(num_layers, n_branches * batch)
    mask[list(blocks), (n_branches - 1) * batch :] = 0
    return mask


def per_step_guidance(settings: PassSettings, timesteps: list[float]) -> list[StepGuidance]:
    """The guidance values of every step, resolved from scalars or ``guidance_timesteps``-indexed lists."""
    out = []
    for t in timesteps:
        blocks = guidance_at(t, settings.guidance_timesteps, settings.skip_block_list, blocks=True)
        out.append(
            StepGuidance(
                cfg=float(guidance_at(t, settings.guidance_timesteps, settings.guidance_scale)),
                stg=float(guidance_at(t, settings.guidance_timesteps, settings.stg_scale)),
                rescale=float(guidance_at(t, settings.guidance_timesteps, settings.rescaling_scale)),
                blocks=tuple(blocks or ()),
            )
        )
    return out


def denoise(
    transformer: Transformer,
    state: LatentState,
    text: TextContext,
    timesteps: torch.Tensor,
    settings: PassSettings,
    *,
    frame_rate: float,
    stg_mode: str,
    image_cond_noise_scale: float,
    noise: torch.Generator,
    aux: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the pass; return the final tokens (B, N, C), conditioning tokens included.

    ``noise`` is the stream the reference draws from its ``generator`` (the per-step conditioning noise), ``aux`` the
    one it draws from the global RNG (stochastic sampling)."""
    latents = state.latents
    b = latents.shape[0]
    dtype = next(transformer.parameters()).dtype
    steps = [float(t) for t in timesteps.tolist()]  # the host's copy, read once per pass
    guidance = per_step_guidance(settings, steps)
    # The schedule on the latents' device once, so the loop copies nothing between host and device.
    timesteps = timesteps.to(device=latents.device, dtype=torch.float32)
    grid = torch.cat([timesteps, timesteps.new_zeros(1)])
    positions = state.positions.to(torch.float32)
    positions[:, 0] = positions[:, 0] * (1.0 / frame_rate)
    cos, sin = transformer.rope(positions, dtype=dtype)  # (B, N, D), once per pass
    n_max = max(len(active_branches(g.cfg, g.stg)) for g in guidance)
    if b > 1:  # every guidance branch shares the positions; a batch of 1 broadcasts
        cos, sin = cos.repeat(n_max, 1, 1), sin.repeat(n_max, 1, 1)
    strategy = SkipLayerStrategy(stg_mode)
    text = text.trimmed()
    texts = {"uncond": (text.negative, text.negative_mask), "cond": (text.positive, text.positive_mask)}
    texts["perturbed"] = texts["cond"]
    prepared: dict[tuple[str, ...], PreparedText] = {}  # the text side of the network, once per branch set and pass
    hard = None if state.strength is None else (state.strength > 1.0 - 1e-6).unsqueeze(-1)

    for i, (t, g) in enumerate(zip(steps, guidance)):
        t_ = timesteps[i]  # 0-d float32, so the arithmetic below rounds as the reference's does
        branches = active_branches(g.cfg, g.stg)
        n = len(branches)
        if hard is not None and image_cond_noise_scale > 0.0:
            eps = torch.randn(latents.shape, generator=noise, dtype=latents.dtype, device=latents.device)
            latents = torch.where(hard, state.clean + image_cond_noise_scale * eps * (t_**2), latents)
        t_tok = token_timesteps(t_.reshape(1, 1).expand(b, 1), state.strength)  # (B, 1) or (B, N)
        skip_mask = None
        if "perturbed" in branches and g.blocks:
            skip_mask = skip_layer_mask(transformer.cfg.num_layers, n, b, g.blocks).to(
                dtype=dtype, device=latents.device
            )
        key = tuple(branches)
        if key not in prepared:
            prepared[key] = transformer.prepare_text(
                torch.cat([texts[k][0] for k in branches]).to(dtype), torch.cat([texts[k][1] for k in branches])
            )
        velocity = transformer(
            torch.cat([latents] * n).to(dtype),
            None,
            torch.cat([t_tok] * n),
            prepared[key],
            rope=(cos[: n * b], sin[: n * b]),
            skip_layer_mask=skip_mask,
            skip_layer_strategy=strategy if skip_mask is not None else None,
        )
        parts = dict(zip(branches, velocity.chunk(n)))
        v = combine(
            parts.get("uncond"),
            parts.get("cond"),
            parts.get("perturbed"),
            cfg_scale=g.cfg,
            stg_scale=g.stg,
            rescale=g.rescale,
            cfg_star=settings.cfg_star_rescale,
        )
        t_step = t_tok[:1]  # the reference steps every element with element 0's timesteps
        if settings.stochastic_sampling:
            stepped = stochastic_step(latents, v, t_step, grid, generator=aux)
        else:
            stepped = euler_step(latents, v, t_step, grid)
        latents = conditioned_update(latents, stepped, t_, state.strength)
        if callback is not None:
            callback(i, len(steps), t)
    return latents
