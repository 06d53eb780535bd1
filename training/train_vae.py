"""Stage 1: the VAE, trained for reconstruction with its decoder conditioned on the decode timestep.

Each step draws fresh scenes. A clip goes through the encoder, a posterior sample is normalised with running
per-channel statistics (those become ``per_channel_statistics``), blended with noise as the recipe's decode noise
does (``(1 - s) z + s eps``) and decoded at a random decode timestep, so the decoder learns to undo that noise.
Loss: MSE + L1 + an L1 on spatial gradients (sharp edges), weighted towards the object's pixels, plus a small KL.

The first 40% of the steps train on single frames (8 per batch: the spatial rendering and the first latent
frame, which image-to-video conditions on); then 128x128x25 clips, 64x64x25 clips (the multi-scale recipe's
first-pass size) and single frames take turns.
"""

from __future__ import annotations

import logging
import math
import random
import time

import torch
import torch.nn.functional as F
from scene_data import SIZE, clip

from ltxv.model.vae import VideoVAE
from ltxv.model.vae_blocks import ResBlock
from ltxv.testing.scenes import random_scene

log = logging.getLogger("train")

KL_WEIGHT = 1e-4
OBJECT_WEIGHT = 4.0  # extra loss weight on (dilated) object pixels: the object is ~5% of the frame
GRAD_WEIGHT = 0.5
MAX_DECODE_T = 0.15  # decode timesteps drawn in [0, MAX_DECODE_T]; the recipe decodes at 0.05 with noise 0.025
STATS_MOMENTUM = 0.02


def _batch(rng: random.Random, kind: str) -> torch.Tensor:
    if kind == "image":  # single 128x128 frames (the first latent frame, which image-to-video conditions on)
        return torch.stack([clip(random_scene(rng), SIZE, frames=1) for _ in range(8)])
    if kind == "full":  # whole 128x128x25 clips
        return torch.stack([clip(random_scene(rng), SIZE) for _ in range(2)])
    return torch.stack([clip(random_scene(rng), SIZE // 2) for _ in range(4)])  # "half": whole 64-pixel clips


def _loss(y: torch.Tensor, x: torch.Tensor, sharp: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Object-weighted MSE; with ``sharp`` also L1 and an L1 on the error's spatial gradients (edges). L1 alone
    would keep the first steps at its median solution, the empty background."""
    obj = (x.amax(dim=1, keepdim=True) > -0.5).float()  # (B, 1, F, H, W): object pixels (backgrounds are dark)
    w = 1.0 + OBJECT_WEIGHT * F.max_pool3d(obj, (1, 5, 5), stride=1, padding=(0, 2, 2))
    w = w / w.mean()
    err = y - x
    l1, l2 = (w * err.abs()).mean(), (w * err.square()).mean()
    loss = l2
    if sharp:
        gy = (err[..., 1:, :] - err[..., :-1, :]).abs().mean()
        gx = (err[..., :, 1:] - err[..., :, :-1]).abs().mean()
        loss = loss + l1 + GRAD_WEIGHT * (gx + gy)
    return loss, {"l1": float(l1.detach()), "mse": float(err.detach().square().mean())}


def train_vae(
    vae: VideoVAE,
    *,
    steps: int,
    seed: int,
    lr: float = 1e-3,
    log_every: int = 25,
    kinds: tuple[str, ...] = ("full", "full", "half", "image"),
    image_steps: float = 0.4,
) -> list[dict]:
    """Train in place; returns the loss curve.

    The first ``image_steps`` of the steps: single frames, a plain autoencoder (no posterior sample, no decode noise,
    MSE). At first the latents hardly differ between inputs (the background dominates every 32x32 cell) and any noise
    on them hides what does differ: the decoder then settles on the empty background and the posterior collapses.
    The rest: ``kinds`` in turn, posterior samples and decode noise ramped in over a tenth of the steps, the full
    loss and KL."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Every resnet starts as the identity (its second conv zero, as DiT zero-inits its blocks): the input then
        # reaches the latents through the compression blocks' own paths, and latents differ between inputs from the
        # first step. With the default init they hardly do, and training sat on the empty background for hundreds of
        # steps, or for good (measured on two seeds each).
        for m in vae.modules():
            if isinstance(m, ResBlock):
                m.conv2.conv.weight.zero_()
                m.conv2.conv.bias.zero_()
        vae.encoder.conv_out.conv.bias[-1] = -8.0  # a near-deterministic posterior to start from
    vae.train()
    vae.decoder.timestep_scale_multiplier.requires_grad_(False)  # stays 1000, as in the released decoders
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = min(100, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    )
    mean_buf, std_buf = vae.per_channel_statistics.mean_std()
    curve, t0, acc = [], time.perf_counter(), {"loss": 0.0, "l1": 0.0, "mse": 0.0}
    first = int(image_steps * steps)
    for step in range(steps):
        ramp = min(1.0, max(0.0, (step - first) / (0.1 * steps)))  # 0 in the autoencoder phase
        x = _batch(rng, "image" if step < first else kinds[step % len(kinds)])
        mean, logvar = vae.encoder(x)  # float32: faster than bf16 autocast for these narrow convolutions (measured)
        logvar = logvar.clamp(-30.0, 20.0)
        with torch.no_grad():  # running per-channel statistics of the posterior mean
            m = mean.transpose(0, 1).flatten(1)
            mean_buf.lerp_(m.mean(dim=1), STATS_MOMENTUM)
            std_buf.lerp_(m.std(dim=1).clamp_min(1e-3), STATS_MOMENTUM)
        z = mean + ramp * torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        b = x.shape[0]
        t = torch.rand(b, generator=gen) * MAX_DECODE_T * ramp
        s = (t * (0.25 + 0.75 * torch.rand(b, generator=gen))).view(b, 1, 1, 1, 1)
        zn = vae.normalize(z)
        zn = (1 - s) * zn + s * torch.randn(zn.shape, generator=gen)
        y = vae.decoder(vae.denormalize(zn), t)
        rec, parts = _loss(y, x, sharp=step >= first)
        kl = 0.5 * (mean.square() + (logvar.exp() - 1 - logvar) * (step >= first)).mean()
        loss = rec + KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc["loss"] += float(loss.detach())
        acc["l1"] += parts["l1"]
        acc["mse"] += parts["mse"]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            elapsed = time.perf_counter() - t0
            row = {"step": step + 1, **{k: v / n for k, v in acc.items()}, "elapsed_s": round(elapsed, 1)}
            curve.append(row)
            log.info(
                "vae step %d/%d loss %.4f l1 %.4f mse %.5f  %.2f steps/s",
                step + 1,
                steps,
                row["loss"],
                row["l1"],
                row["mse"],
                (step + 1) / elapsed,
            )
            acc = dict.fromkeys(acc, 0.0)
    vae.eval()
    return curve


def train_decoder(
    vae: VideoVAE,
    *,
    steps: int,
    seed: int,
    lr: float = 3e-4,
    log_every: int = 25,
    kinds: tuple[str, ...] = ("image", "full", "image", "half"),
) -> list[dict]:
    """Fine-tune the decoder alone, through the recipe's decode noise, on the final per-channel statistics (the
    encoder and so the latents the transformer learned stay as they are). Single frames get half the steps: frame
    0 is what image-to-video must keep, and it decodes from a latent frame of its own. Returns the loss curve."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.decoder.timestep_scale_multiplier.requires_grad_(False)
    vae.decoder.train()
    params = [p for p in vae.decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    curve, t0, acc = [], time.perf_counter(), {"loss": 0.0, "l1": 0.0, "mse": 0.0}
    for step in range(steps):
        x = _batch(rng, kinds[step % len(kinds)])
        with torch.no_grad():
            mean, logvar = vae.encoder(x)
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape, generator=gen)
            b = x.shape[0]
            t = torch.rand(b, generator=gen) * MAX_DECODE_T
            s = (t * (0.25 + 0.75 * torch.rand(b, generator=gen))).view(b, 1, 1, 1, 1)
            zn = vae.normalize(z)
            zn = (1 - s) * zn + s * torch.randn(zn.shape, generator=gen)
        y = vae.decoder(vae.denormalize(zn), t)
        loss, parts = _loss(y, x, sharp=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc["loss"] += float(loss.detach())
        acc["l1"] += parts["l1"]
        acc["mse"] += parts["mse"]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            elapsed = time.perf_counter() - t0
            row = {"step": step + 1, **{k: v / n for k, v in acc.items()}, "elapsed_s": round(elapsed, 1)}
            curve.append(row)
            log.info(
                "decoder step %d/%d loss %.4f l1 %.4f mse %.5f  %.2f steps/s",
                step + 1,
                steps,
                row["loss"],
                row["l1"],
                row["mse"],
                (step + 1) / elapsed,
            )
            acc = dict.fromkeys(acc, 0.0)
    vae.requires_grad_(False).eval()
    return curve
