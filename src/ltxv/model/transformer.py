"""The LTX-Video diffusion transformer (reference ``Transformer3DModel``), sequence level.

Tokens in, velocity out: patchify and positions live in :mod:`ltxv.model.patchify`, RoPE tables in
:mod:`ltxv.model.rope` and can be computed once per request with :meth:`Transformer.rope`. State-dict keys and shapes
are the official ones without the ``model.diffusion_model.`` prefix.

Block (PixArt-style AdaLN-single, ``D`` = heads x head dim)::

    shift1, scale1, gate1, shift2, scale2, gate2 = block.scale_shift_table + adaln(t)    # per sample or per token
    x = x + gate1 * attn1(rms(x) * (1 + scale1) + shift1, rope)                        # self-attention
    x = x + attn2(x, text, text_bias)                                                   # cross-attn: no norm, no gate
    x = x + gate2 * ff(rms(x) * (1 + scale2) + shift2)                                  # GELU(tanh) MLP, 4D
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltxv.config import TransformerConfig
from ltxv.model.attention import Attention, AttentionCore, SkipLayerStrategy, rms_norm
from ltxv.model.embeddings import TimestepEmbedder, TwoLayerMLP, timestep_sinusoids
from ltxv.model.rope import rope_tables, signed_sin

__all__ = ["PreparedText", "SkipLayerStrategy", "Transformer", "TransformerBlock", "timestep_sinusoids"]

_OUT_NORM_EPS = 1e-6  # the reference's final LayerNorm eps is fixed, not the config's norm_eps
# Row order of a block's scale_shift_table / modulation (reference BasicTransformerBlock).
_SHIFT_MSA, _SCALE_MSA, _GATE_MSA, _SHIFT_MLP, _SCALE_MLP, _GATE_MLP = range(6)
_MASK_BIAS = -10000.0  # finite, as in the reference: a fully masked text row still attends uniformly


class _AdaLNSingle(nn.Module):
    """One timestep embedding shared by all blocks; key names ``adaln_single.emb.timestep_embedder.*``,
    ``adaln_single.linear``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.emb = TimestepEmbedder(d)
        self.linear = nn.Linear(d, 6 * d)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) scaled timesteps -> (modulation (M, 6D), embedding (M, D))."""
        emb = self.emb(t, dtype)
        return self.linear(F.silu(emb)), emb


class _GeluProj(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: backward needs the pre-activation
            return F.gelu(self.proj(x), approximate="tanh")
        return torch.ops.aten.gelu_(self.proj(x), approximate="tanh")  # in place on the fresh (B, N, 4D) tensor


class FeedForward(nn.Module):
    """Linear(D, 4D) -> GELU(tanh) -> Linear(4D, D); keys ``net.0.proj`` and ``net.2`` (``net.1`` was a dropout)."""

    def __init__(self, d: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(_GeluProj(d, mult * d), nn.Identity(), nn.Linear(mult * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """One DiT block (module docstring); STG hooks per sample through ``skip_mask`` (see :class:`Transformer`)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, heads = cfg.inner_dim, cfg.num_attention_heads
        self.eps = cfg.norm_eps
        kw = {"bias": cfg.attention_bias, "out_bias": cfg.attention_out_bias, "qk_norm_eps": cfg.qk_norm_eps}
        self.attn1 = Attention(d, heads, **kw)
        self.attn2 = Attention(d, heads, context_dim=cfg.cross_attention_dim, **kw)
        self.ff = FeedForward(d)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(
        self,
        x: torch.Tensor,
        text: PreparedText,
        index: int,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        skip_mask: torch.Tensor | None = None,
        skip_strategy: SkipLayerStrategy | None = None,
        attend: AttentionCore | None = None,
    ) -> torch.Tensor:
        """x (B, N, D) is updated in place and returned; ``text`` holds this block's cross-attention keys/values at
        ``index``; modulation (B, T', 6, D) with T' = 1 or N; skip_mask (B, 1, 1) or None; ``attend``: the
        self-attention's core (default the plain one). Cross-attention is per token and always runs plainly.

        Every update runs in place on a fresh tensor, in the reference's operation order (bit-identical): on a CPU
        most of the time outside the matmuls is spent allocating and streaming full (N, D) tensors, not computing.
        With gradients enabled (training) and no STG the same arithmetic runs out of place, and x is not updated."""
        if torch.is_grad_enabled() and skip_mask is None:
            return self._forward_out_of_place(x, text, index, modulation, rope)
        table = self.scale_shift_table

        def ada(i: int) -> torch.Tensor:  # (B, T', D); built on use so per-token tables never exist all six at once
            return table[i] + modulation[:, :, i]

        perturbed = skip_mask is not None
        x_in = x.clone() if perturbed and skip_strategy is SkipLayerStrategy.TRANSFORMER_BLOCK else None
        h = rms_norm(x, self.eps).mul_(1 + ada(_SCALE_MSA)).add_(ada(_SHIFT_MSA))
        attn = self.attn1(h, rope=rope, skip_mask=skip_mask, skip_strategy=skip_strategy, core=attend)
        attn = attn.mul_(ada(_GATE_MSA))
        if perturbed and skip_strategy is SkipLayerStrategy.RESIDUAL:
            x = (x + attn) * skip_mask + x * (1.0 - skip_mask)
        else:
            x = x.add_(attn)

        x = x.add_(self.attn2(x, kv=text.kv[index], bias=text.bias))

        h = rms_norm(x, self.eps).mul_(1 + ada(_SCALE_MLP)).add_(ada(_SHIFT_MLP))
        x = x.add_(self.ff(h).mul_(ada(_GATE_MLP)))

        if x_in is not None:
            x = x * skip_mask + x_in * (1.0 - skip_mask)
        return x

    def _forward_out_of_place(
        self,
        x: torch.Tensor,
        text: PreparedText,
        index: int,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """The block for training (no STG): :meth:`forward`'s arithmetic with every op out of place."""
        ada = self.scale_shift_table[None, None] + modulation  # (B, T', 6, D)
        h = rms_norm(x, self.eps) * (1 + ada[:, :, _SCALE_MSA]) + ada[:, :, _SHIFT_MSA]
        x = x + self.attn1(h, rope=rope) * ada[:, :, _GATE_MSA]
        x = x + self.attn2(x, kv=text.kv[index], bias=text.bias)
        h = rms_norm(x, self.eps) * (1 + ada[:, :, _SCALE_MLP]) + ada[:, :, _SHIFT_MLP]
        return x + self.ff(h) * ada[:, :, _GATE_MLP]


@dataclass(frozen=True)
class PreparedText:
    """What the transformer derives from the text alone, computed once per pass by :meth:`Transformer.prepare_text`
    instead of at every step: the projected captions' cross-attention keys/values of every block and the mask bias."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per block: (B, L, D) keys (normalised) and values
    bias: torch.Tensor | None  # (B, 1, 1, L) additive, over heads and queries

    @property
    def batch(self) -> int:
        return self.kv[0][0].shape[0]


class Transformer(nn.Module):
    """The LTX-Video DiT. See the module docstring for the block; :meth:`forward` for inputs and STG.

    Spatio-temporal guidance (STG): ``skip_layer_mask[layer, b] == 0`` perturbs sample ``b`` in block ``layer``
    (1 = normal); values in between blend ``m * normal + (1 - m) * perturbed``, bit-identical to the reference:

    * ``ATTENTION_VALUES``: the self-attention output (before ``to_out``) is replaced by V, i.e. every token attends
      only to itself.
    * ``ATTENTION_SKIP``: the self-attention output (before ``to_out``) is replaced by its input (the normalised,
      modulated hidden state).
    * ``TRANSFORMER_BLOCK``: the block output is replaced by the block input.
    * ``RESIDUAL``: the self-attention sub-layer adds nothing to the residual stream of the perturbed sample in that
      block (x is unchanged by attn1; cross-attention and FF still run). The reference's ``Residual`` is a silent
      no-op (it only acts when ``attn.residual_connection`` is set, which the transformer never does); this is what
      it was meant to do, so outputs differ from the reference in this mode by design.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.inner_dim
        if cfg.cross_attention_dim != d:
            raise ValueError(f"cross_attention_dim={cfg.cross_attention_dim} must equal the width {d}")
        self.patchify_proj = nn.Linear(cfg.in_channels, d)
        self.adaln_single = _AdaLNSingle(d)
        self.caption_projection = TwoLayerMLP(cfg.caption_channels, d, nn.GELU(approximate="tanh"))
        self.transformer_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, cfg.out_channels)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (B, 3, N) float32 (seconds, pixel y, pixel x) -> RoPE (cos, signed sin), each (B, N, D) in
        ``dtype`` (default: the model's); see :func:`ltxv.model.rope.apply_rope_`. Depends only on the positions:
        compute once per pass, not per step; a batch of 1 broadcasts over any batch."""
        dtype = self.patchify_proj.weight.dtype if dtype is None else dtype
        c = self.cfg
        cos, sin = rope_tables(
            positions, c.inner_dim, c.positional_embedding_theta, c.positional_embedding_max_pos, dtype
        )
        return cos, signed_sin(sin)

    def prepare_text(self, context: torch.Tensor, context_mask: torch.Tensor | None) -> PreparedText:
        """Text embeddings (B, L, caption_channels) and mask (B, L) (1 = keep, 0 = padding, or None) -> the
        projected captions' cross-attention keys/values of every block, and the mask bias. Once per pass."""
        b = context.shape[0]
        context = self.caption_projection(context.to(self.patchify_proj.weight.dtype))  # (B, L, D)
        bias = None
        if context_mask is not None:  # (B, 1, 1, L) over heads and queries
            bias = ((1 - context_mask.to(context.dtype)) * _MASK_BIAS).view(b, 1, 1, -1)
        kv = tuple(block.attn2.key_value(context) for block in self.transformer_blocks)
        return PreparedText(kv=kv, bias=bias)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None,
        timesteps: torch.Tensor,
        context: torch.Tensor | PreparedText,
        context_mask: torch.Tensor | None = None,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        skip_layer_mask: torch.Tensor | None = None,
        skip_layer_strategy: SkipLayerStrategy | None = None,
    ) -> torch.Tensor:
        """Predict the velocity of every token.

        tokens (B, N, C_in); positions (B, 3, N) float32 or ``rope`` = :meth:`rope` of them (exactly one of the two);
        timesteps (B,), (B, 1) or (B, N) in [0, 1] (per-token: conditioning tokens carry their own noise level;
        pass float32 or float64, they are scaled in the caller's precision like the reference);
        context (B, L, caption_channels) text embeddings with context_mask (B, L) 1 = keep, 0 = padding, or None; or
        ``context`` = :meth:`prepare_text` of them (then no mask here);
        skip_layer_mask (num_layers, B) with ``skip_layer_strategy``: STG, see the class docstring.
        Returns (B, N, C_out).
        """
        if (positions is None) == (rope is None):
            raise ValueError("pass exactly one of `positions` and `rope`")
        if (skip_layer_mask is None) != (skip_layer_strategy is None):
            raise ValueError("`skip_layer_mask` and `skip_layer_strategy` go together")
        if isinstance(context, PreparedText):
            if context_mask is not None:
                raise ValueError("a prepared text already holds its mask: pass context_mask=None")
            text = context
        else:
            text = self.prepare_text(context, context_mask)
        b = tokens.shape[0]
        if text.batch != b:
            raise ValueError(f"text batch {text.batch} != token batch {b}")
        x, modulation, embedded = self.embed(tokens, timesteps)
        if rope is None:
            rope = self.rope(positions, x.dtype)
        skips = self.skip_masks(skip_layer_mask, b, x.dtype)
        x = self.run_blocks(x, text, modulation, rope, skips, skip_layer_strategy)
        return self.head(x, embedded)

    # The forward in three parts, for callers that run only some blocks (step caching, sequence parallelism). Each part
    # is exactly the corresponding piece of :meth:`forward`, so composing them is bit-identical to it.

    def embed(self, tokens: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, N, C_in), timesteps as in :meth:`forward` -> the residual stream x (B, N, D) (owned by the
        caller: blocks update it in place), the AdaLN modulation (B, T', 6, D) and the timestep embedding
        (B, T', 1, D) for :meth:`head`."""
        b = tokens.shape[0]
        x = self.patchify_proj(tokens)  # (B, N, D)
        dtype, d = x.dtype, x.shape[-1]
        t = timesteps.flatten() * self.cfg.timestep_scale_multiplier  # (B*T',)
        modulation, embedded = self.adaln_single(t, dtype)
        return x, modulation.view(b, -1, 6, d), embedded.view(b, -1, 1, d)

    def skip_masks(self, skip_layer_mask: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The STG mask (num_layers, B) as the blocks take it, (num_layers, B, 1, 1) in ``dtype``; None stays None."""
        if skip_layer_mask is None:
            return None
        if skip_layer_mask.shape != (len(self.transformer_blocks), batch):
            raise ValueError(f"skip_layer_mask is {tuple(skip_layer_mask.shape)}, expected (num_layers, {batch})")
        return skip_layer_mask.to(dtype).view(-1, batch, 1, 1)

    def run_blocks(
        self,
        x: torch.Tensor,
        text: PreparedText,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        skips: torch.Tensor | None = None,
        skip_strategy: SkipLayerStrategy | None = None,
        start: int = 0,
        stop: int | None = None,
        *,
        attend: AttentionCore | None = None,
    ) -> torch.Tensor:
        """Blocks ``start`` to ``stop`` (exclusive; default all) on x (B, N, D), updated in place and returned;
        ``skips`` from :meth:`skip_masks`. ``attend``: the self-attention core of every block (default the plain
        one; sequence parallelism passes one that sees the tokens of every rank, with x, rope and modulation this
        rank's tokens only)."""
        stop = len(self.transformer_blocks) if stop is None else stop
        for i in range(start, stop):
            skip = None if skips is None else skips[i]
            x = self.transformer_blocks[i](x, text, i, modulation, rope, skip, skip_strategy, attend)
        return x

    def head(self, x: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """The output norm, modulation and projection: x (B, N, D) (modified in place) -> (B, N, C_out)."""
        shift, scale = (self.scale_shift_table + embedded).unbind(2)  # (B, T', D) each
        x = F.layer_norm(x, (x.shape[-1],), eps=_OUT_NORM_EPS)
        x = x * (1 + scale) + shift if torch.is_grad_enabled() else x.mul_(1 + scale).add_(shift)
        return self.proj_out(x)  # (B, N, C_out)
