"""The denoise closure of one pass: batched guidance around the step's transformer (study §4.7).

Numerically this is the model side of the reference's ``LTXVideoPipeline.__call__`` loop; the loop itself (schedule,
update rule, conditioning mask) is a sampler in :mod:`ltxv.sampling.samplers`. Differences, on purpose:
- RoPE tables, the fractional positions and the text side of the network are computed once per pass, not per step.
- Guidance branches are laid out branch-major ``[uncond..., cond..., perturbed...]`` and the STG skip mask marks the
  perturbed *branch* for every batch element. The reference marks ``ptb_index::num_conds`` (batch-major) over a
  branch-major batch, which perturbs the wrong samples when the batch is larger than 1 (study §7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ltxv.model.transformer import PreparedText, SkipLayerStrategy, Transformer
from ltxv.pipelines.request import PassSettings
from ltxv.sampling.guidance import active_branches, combine, guidance_at


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


@dataclass(frozen=True)
class TransformerCall:
    """One transformer evaluation of a step: everything the call needs, so a wrapper (step caching, sequence
    parallelism) can run it, run parts of it (``model.embed`` / ``run_blocks`` / ``head``) or skip it.

    The batch is branch-major: ``branches[k]`` holds rows ``k * batch .. (k + 1) * batch`` of every tensor."""

    step: int
    label: str  # the transformer's name in the pipeline (hybrid schedules run several)
    model: Transformer
    tokens: torch.Tensor  # (n * B, N, C_in)
    timesteps: torch.Tensor  # (n * B, 1) or (n * B, N)
    text: PreparedText
    rope: tuple[torch.Tensor, torch.Tensor]
    skip_mask: torch.Tensor | None  # (num_layers, n * B)
    skip_strategy: SkipLayerStrategy | None
    branches: tuple[str, ...]
    batch: int

    def run(self) -> torch.Tensor:
        """The plain call: velocity (n * B, N, C_out)."""
        return self.model(
            self.tokens,
            None,
            self.timesteps,
            self.text,
            rope=self.rope,
            skip_layer_mask=self.skip_mask,
            skip_layer_strategy=self.skip_strategy,
        )


CallTransformer = Callable[[TransformerCall], torch.Tensor]
StepModels = Sequence[tuple[str, Transformer]]  # (label, network) for each step of a pass


class Denoiser:
    """The denoise closure of one pass: latents and per-token times in, the guided velocity out.

    It runs the guidance branches of each step as one batch (branch-major ``[uncond..., cond..., perturbed...]``),
    with the step's transformer (``models[step]``: one network for every step, or a hybrid schedule), and keeps per
    network what depends only on the pass: the RoPE tables of the positions and the text side of the network (the
    projected captions' cross-attention keys/values), once per branch set. ``call`` evaluates a
    :class:`TransformerCall` (default: :meth:`TransformerCall.run`); step caching and sequence parallelism wrap it.
    A sampler (``ltxv.sampling.samplers``) calls the denoiser once per step."""

    def __init__(
        self,
        models: StepModels,
        text: TextContext,
        positions: torch.Tensor,
        settings: PassSettings,
        timesteps: Sequence[float],
        *,
        frame_rate: float,
        stg_mode: str,
        call: CallTransformer | None = None,
    ) -> None:
        if len(models) != len(timesteps):
            raise ValueError(f"{len(models)} step models for {len(timesteps)} steps")
        self.models = models
        self.guidance = per_step_guidance(settings, list(timesteps))
        self.cfg_star = settings.cfg_star_rescale
        self.strategy = SkipLayerStrategy(stg_mode)
        self.call = call or TransformerCall.run
        self.batch = positions.shape[0]
        self.n_max = max(len(active_branches(g.cfg, g.stg)) for g in self.guidance)
        positions = positions.to(torch.float32)
        positions[:, 0] = positions[:, 0] * (1.0 / frame_rate)
        self.positions = positions  # (B, 3, N) seconds, pixels, pixels
        text = text.trimmed()
        self.texts = {"uncond": (text.negative, text.negative_mask), "cond": (text.positive, text.positive_mask)}
        self.texts["perturbed"] = self.texts["cond"]
        self._rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._prepared: dict[tuple[str, tuple[str, ...]], PreparedText] = {}

    def rope(self, label: str, model: Transformer) -> tuple[torch.Tensor, torch.Tensor]:
        if label not in self._rope:
            cos, sin = model.rope(self.positions, dtype=_dtype(model))  # (B, N, D), once per pass and network
            if self.batch > 1:  # every guidance branch shares the positions; a batch of 1 broadcasts
                cos, sin = cos.repeat(self.n_max, 1, 1), sin.repeat(self.n_max, 1, 1)
            self._rope[label] = (cos, sin)
        return self._rope[label]

    def prepared_text(self, label: str, model: Transformer, branches: tuple[str, ...]) -> PreparedText:
        key = (label, branches)
        if key not in self._prepared:
            self._prepared[key] = model.prepare_text(
                torch.cat([self.texts[k][0] for k in branches]).to(_dtype(model)),
                torch.cat([self.texts[k][1] for k in branches]),
            )
        return self._prepared[key]

    def __call__(self, step: int, latents: torch.Tensor, t_tok: torch.Tensor) -> torch.Tensor:
        g = self.guidance[step]
        label, model = self.models[step]
        dtype = _dtype(model)
        branches = active_branches(g.cfg, g.stg)
        n, b = len(branches), latents.shape[0]
        skip_mask = None
        if "perturbed" in branches and g.blocks:
            skip_mask = skip_layer_mask(model.cfg.num_layers, n, b, g.blocks).to(dtype=dtype, device=latents.device)
        cos, sin = self.rope(label, model)
        velocity = self.call(
            TransformerCall(
                step=step,
                label=label,
                model=model,
                tokens=torch.cat([latents] * n).to(dtype),
                timesteps=torch.cat([t_tok] * n),
                text=self.prepared_text(label, model, branches),
                rope=(cos[: n * b], sin[: n * b]),
                skip_mask=skip_mask,
                skip_strategy=self.strategy if skip_mask is not None else None,
                branches=branches,
                batch=b,
            )
        )
        parts = dict(zip(branches, velocity.chunk(n)))
        return combine(
            parts.get("uncond"),
            parts.get("cond"),
            parts.get("perturbed"),
            cfg_scale=g.cfg,
            stg_scale=g.stg,
            rescale=g.rescale,
            cfg_star=self.cfg_star,
        )


def _dtype(model: Transformer) -> torch.dtype:
    return model.patchify_proj.weight.dtype
