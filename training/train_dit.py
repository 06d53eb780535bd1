"""Stage 2: the transformer, trained as LTX-Video trains it: rectified flow on the VAE's normalised latents.

A clean latent x0 and noise eps give ``x_t = (1 - t) x0 + t eps`` and the target velocity ``eps - x0``; t is drawn
per sample (half uniform, half logit-normal, optionally shifted towards noise as LTX-Video shifts its schedules) and
handed to the model per token. In a third of the samples the first
latent frame (in some, the first two) is a conditioning frame, as image-to-video and video extension see it at
inference (:mod:`ltxv.conditioning.state`): its tokens get timestep 0 and the pipeline's small conditioning noise
``0.15 t^2 eps``, and are left out of the loss. Captions are dropped (to "" or the default negative prompt) one time
in ten, so classifier-free guidance has an unconditional model to push away from.

Samples alternate between the 7x8x8 latents of 128-pixel clips and the 7x4x4 of 64-pixel ones (the multi-scale
recipe's first pass), or follow a given cycle of sizes. Frame rates are drawn from 24-30 fps, so the RoPE time axis matches any of them.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time

import torch

from ltxv.model.patchify import latent_grid, patchify, pixel_positions
from ltxv.model.transformer import Transformer

log = logging.getLogger("train")

CONDITION_P = 0.3  # first latent frame clean
EXTEND_P = 0.1  # first two latent frames clean
DROP_CAPTION_P = 0.1
CONDITION_NOISE = 0.15  # the pipeline's default image_cond_noise_scale
FPS_RANGE = (24.0, 30.0)


def sample_t(b: int, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Half uniform in (0, 1), half logit-normal (mean 0, std 1), then shifted towards noise by ``shift``
    (``s t / (1 + (s - 1) t)``, the timestep shift LTX-Video's training and schedules apply): every noise level is
    trained, the middle most at shift 1, the noisy end more with a larger shift."""
    u = torch.rand(b, generator=gen)
    ln = torch.sigmoid(torch.randn(b, generator=gen))
    t = torch.where(torch.rand(b, generator=gen) < 0.5, u, ln)
    t = shift * t / (1 + (shift - 1) * t)
    return t.clamp(1e-4, 1.0)


class EMA:
    """Exponential moving average of a model's weights (what is shipped): decay warms up from 0 to ``decay``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model, self.decay, self.n = copy.deepcopy(model).requires_grad_(False), decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)


def train_transformer(
    transformer: Transformer,
    latents: dict[int, torch.Tensor],
    caption_index: torch.Tensor,
    text: tuple[torch.Tensor, torch.Tensor],
    uncond: list[int],
    *,
    steps: int,
    seed: int,
    tokens_per_batch: int = 4480,
    lr: float = 5e-4,
    shift: float = 1.0,
    cycle: tuple[int, ...] | None = None,
    log_every: int = 50,
) -> tuple[Transformer, list[dict]]:
    """``latents[size]`` (N, C, F, h, w) normalised; clip i has captions ``caption_index[i]`` (row of variants into
    the prompt table ``text`` = (embeddings (P, L, D), mask (P, L))); ``uncond`` rows are the dropped-caption prompts.
    A batch holds ``tokens_per_batch`` tokens: 10 full-size clips (448 tokens each) or 40 half-size ones (112), so
    both sizes cost alike. Returns the EMA model and the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    emb, mask = text
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = min(200, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    )
    ema = EMA(transformer, 0.998)
    sizes = list(cycle) if cycle else sorted(latents)
    curve, acc, t0 = [], 0.0, time.perf_counter()
    for step in range(steps):
        lat = latents[sizes[step % len(sizes)]]
        n, c, f, h, w = lat.shape
        idx = torch.randint(n, (max(1, tokens_per_batch // (f * h * w)),), generator=gen)
        x0 = patchify(lat[idx])  # (B, N, C)
        b, tokens = x0.shape[:2]
        per_frame = h * w
        t = sample_t(b, gen, shift)
        eps = torch.randn(x0.shape, generator=gen)
        # Conditioning frames per sample: 0, 1 or 2 leading latent frames.
        r = torch.rand(b, generator=gen)
        n_cond = torch.where(r < EXTEND_P, 2, torch.where(r < EXTEND_P + CONDITION_P, 1, 0))
        cond = torch.arange(tokens)[None] < (n_cond * per_frame)[:, None]  # (B, N) bool
        tok_t = torch.where(cond, 0.0, t[:, None].expand(b, tokens))
        x_t = (1 - tok_t[..., None]) * x0 + tok_t[..., None] * eps
        sigma = CONDITION_NOISE * torch.rand(b, generator=gen) * 1.5 * t**2  # around the pipeline's 0.15 t^2
        noisy_clean = x0 + sigma.view(b, 1, 1) * torch.randn(x0.shape, generator=gen)
        x_in = torch.where(cond[..., None], noisy_clean, x_t)
        # Captions: one paraphrase per sample, dropped one time in ten.
        variant = torch.randint(caption_index.shape[1], (b,), generator=gen)
        rows = caption_index[idx, variant]
        drop = torch.rand(b, generator=gen) < DROP_CAPTION_P
        rows = torch.where(drop, torch.tensor([rng.choice(uncond) for _ in range(b)]), rows)
        fps = FPS_RANGE[0] + (FPS_RANGE[1] - FPS_RANGE[0]) * rng.random()
        positions = pixel_positions(latent_grid(f, h, w, b), causal_fix=True, frame_rate=fps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = transformer(x_in, positions, tok_t, emb[rows], mask[rows])
        keep = (~cond).float()[..., None]
        loss = ((pred.float() - (eps - x0)) ** 2 * keep).sum() / (keep.sum() * c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(transformer)
        acc += float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            k = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            elapsed = time.perf_counter() - t0
            curve.append({"step": step + 1, "loss": acc / k, "elapsed_s": round(elapsed, 1)})
            log.info("transformer step %d/%d loss %.4f  %.2f steps/s", step + 1, steps, acc / k, (step + 1) / elapsed)
            acc = 0.0
    return ema.model.eval(), curve
