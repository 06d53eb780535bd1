"""Stage 3: the latent upsampler, trained to map the latents of a 64-pixel clip to those of the same scene at 128.

Both sides are the VAE's normalised latents (the upsampler carries the VAE statistics, as the loader sets them), so
this is the map the multi-scale recipe applies between its passes. The input gets a little noise: in the recipe it
comes from the first denoising pass, not from the encoder.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from ltxv.model.upsampler import LatentUpsampler

log = logging.getLogger("train")

INPUT_NOISE = 0.05


def train_upsampler(
    upsampler: LatentUpsampler,
    low: torch.Tensor,
    high: torch.Tensor,
    *,
    steps: int,
    seed: int,
    batch: int = 32,
    lr: float = 1e-3,
    log_every: int = 50,
) -> list[dict]:
    """``low`` (N, C, F, h, w) and ``high`` (N, C, F, 2h, 2w): normalised latents of the same clips."""
    gen = torch.Generator().manual_seed(seed)
    upsampler.train()
    params = list(upsampler.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    curve, acc, t0 = [], 0.0, time.perf_counter()
    for step in range(steps):
        idx = torch.randint(low.shape[0], (batch,), generator=gen)
        x = low[idx] + INPUT_NOISE * torch.randn(low[idx].shape, generator=gen)
        y = upsampler(x)  # float32: bf16 autocast is 20x slower on these tiny grids (measured)
        loss = (y - high[idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc += float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            k = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            elapsed = time.perf_counter() - t0
            curve.append({"step": step + 1, "loss": acc / k, "elapsed_s": round(elapsed, 1)})
            log.info("upsampler step %d/%d loss %.4f  %.2f steps/s", step + 1, steps, acc / k, (step + 1) / elapsed)
            acc = 0.0
    upsampler.eval()
    return curve
