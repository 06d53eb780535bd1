"""The transformer, RoPE and patchify against the reference ``Transformer3DModel`` (same random weights, fp32, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from ltxv.config import TRANSFORMER_2B, TRANSFORMER_13B, TransformerConfig
from ltxv.model.patchify import latent_grid, patchify, pixel_positions, unpatchify
from ltxv.model.rope import apply_rope, rope_tables
from ltxv.model.transformer import SkipLayerStrategy, Transformer
from ltxv.testing.configs import TINY_2B, TINY_13B

ref_t3d = pytest.importorskip("ltx_video.models.transformers.transformer3d")
ref_attention = pytest.importorskip("ltx_video.models.transformers.attention")
ref_patchifier = pytest.importorskip("ltx_video.models.transformers.symmetric_patchifier")
ref_vae_encode = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")
ref_skip = pytest.importorskip("ltx_video.utils.skip_layer_strategy")

TINY = {"2b": TINY_2B, "13b": TINY_13B}
GRID = (3, 5, 7)  # odd latent grid: F x H x W
REF_STRATEGY = {
    SkipLayerStrategy.ATTENTION_VALUES: ref_skip.SkipLayerStrategy.AttentionValues,
    SkipLayerStrategy.ATTENTION_SKIP: ref_skip.SkipLayerStrategy.AttentionSkip,
    SkipLayerStrategy.TRANSFORMER_BLOCK: ref_skip.SkipLayerStrategy.TransformerBlock,
}


def _pair(cfg: TransformerConfig, seed: int = 0) -> tuple[Transformer, torch.nn.Module]:
    """The reference with every parameter re-randomised (its own init leaves some tensors at 0 or 1), copied into ours."""
    ref = ref_t3d.Transformer3DModel.from_config(cfg.to_dict()).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            noise = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _inputs(cfg: TransformerConfig, batch: int = 2, grid: tuple[int, int, int] = GRID, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    n, length = f * h * w, 8
    mask = torch.ones(batch, length)
    mask[0, 5:] = 0  # padded text
    mask[-1, 3:] = 0
    return {
        "tokens": torch.randn(batch, n, cfg.in_channels, generator=g),
        "positions": pixel_positions(latent_grid(f, h, w, batch), causal_fix=True, frame_rate=25.0),
        "timesteps": torch.rand(batch, n, generator=g),  # per token
        "context": torch.randn(batch, length, cfg.caption_channels, generator=g),
        "context_mask": mask,
    }


def _run_ref(ref: torch.nn.Module, x: dict, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        return ref(
            x["tokens"],
            indices_grid=x["positions"],
            encoder_hidden_states=x["context"],
            timestep=x["timesteps"],
            encoder_attention_mask=x["context_mask"],
            return_dict=False,
            **kw,
        )[0]


def _run_ours(ours: Transformer, x: dict, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        return ours(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"], **kw)


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5 * max(1.0, want.abs().max().item()), diff
    return diff


# --------------------------------------------------------------------------------------------------------------------
# Forward parity
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(TINY))
@pytest.mark.parametrize("timestep_shape", ["per_token", "per_sample", "per_sample_column"])
def test_forward_matches_reference(size: str, timestep_shape: str) -> None:
    cfg = TINY[size]
    ours, ref = _pair(cfg)
    x = _inputs(cfg)
    if timestep_shape == "per_sample":
        x["timesteps"] = torch.tensor([0.9, 0.35])  # (B,)
    elif timestep_shape == "per_sample_column":
        x["timesteps"] = torch.tensor([[0.9], [0.35]])  # (B, 1), as the pipeline passes it
    want = _run_ref(ref, x)
    got = _run_ours(ours, x)
    assert got.shape == (2, math.prod(GRID), cfg.out_channels)
    _assert_close(got, want)
    assert want.abs().max().item() > 0.1  # not a degenerate all-zero comparison


def test_text_mask_and_precomputed_rope() -> None:
    cfg = TINY_2B
    ours, ref = _pair(cfg)
    x = _inputs(cfg)
    got = _run_ours(ours, x)
    # The mask matters: dropping it changes the output, in the reference and in ours alike.
    unmasked = {**x, "context_mask": None}
    _assert_close(_run_ours(ours, unmasked), _run_ref(ref, unmasked))
    assert (_run_ours(ours, unmasked) - got).abs().max().item() > 1e-3
    # Precomputed RoPE tables give the same result as positions.
    with torch.no_grad():
        via_rope = ours(
            x["tokens"], None, x["timesteps"], x["context"], x["context_mask"], rope=ours.rope(x["positions"])
        )
    assert torch.equal(via_rope, got)
    with pytest.raises(ValueError, match="exactly one"):
        ours(x["tokens"], None, x["timesteps"], x["context"], x["context_mask"])


def test_batch_elements_are_independent() -> None:
    cfg = TINY_13B
    ours, _ = _pair(cfg)
    x = _inputs(cfg)
    both = _run_ours(ours, x)
    second = _run_ours(ours, {k: v[1:] for k, v in x.items()})
    _assert_close(second, both[1:])


# --------------------------------------------------------------------------------------------------------------------
# STG skip modes
# --------------------------------------------------------------------------------------------------------------------


def _skip_mask(cfg: TransformerConfig) -> torch.Tensor:
    mask = torch.ones(cfg.num_layers, 2)
    mask[1, 1] = 0  # sample 1 perturbed in the last block
    mask[0, 0] = 0  # sample 0 perturbed in the first block
    return mask


@pytest.mark.parametrize("size", list(TINY))
@pytest.mark.parametrize("strategy", list(REF_STRATEGY), ids=lambda s: s.value)
def test_skip_modes_match_reference(size: str, strategy: SkipLayerStrategy) -> None:
    cfg = TINY[size]
    ours, ref = _pair(cfg)
    x = _inputs(cfg)
    mask = _skip_mask(cfg)
    want = _run_ref(ref, x, skip_layer_mask=mask, skip_layer_strategy=REF_STRATEGY[strategy])
    got = _run_ours(ours, x, skip_layer_mask=mask, skip_layer_strategy=strategy)
    _assert_close(got, want)
    normal = _run_ours(ours, x)
    assert (got - normal).abs().amax(dim=(1, 2)).min().item() > 1e-3  # both samples are actually perturbed
    # An all-ones mask is the unperturbed model, exactly.
    ones = torch.ones(cfg.num_layers, 2)
    assert torch.equal(_run_ours(ours, x, skip_layer_mask=ones, skip_layer_strategy=strategy), normal)


@pytest.mark.parametrize("size", list(TINY))
def test_residual_mode_drops_the_self_attention_update(size: str) -> None:
    """Closed form: the reference with attn1's output zeroed for the perturbed sample in the perturbed block (a hook),
    i.e. x passes attn1 unchanged there; the unperturbed sample is untouched."""
    cfg = TINY[size]
    ours, ref = _pair(cfg)
    x = _inputs(cfg)
    layer, sample = 1, 1
    mask = torch.ones(cfg.num_layers, 2)
    mask[layer, sample] = 0
    got = _run_ours(ours, x, skip_layer_mask=mask, skip_layer_strategy=SkipLayerStrategy.RESIDUAL)

    keep = mask[layer].view(2, 1, 1)
    hook = ref.transformer_blocks[layer].attn1.register_forward_hook(lambda _m, _a, out: out * keep)
    try:
        want = _run_ref(ref, x)
    finally:
        hook.remove()
    _assert_close(got, want)

    normal = _run_ours(ours, x)
    assert torch.equal(got[0], normal[0])
    assert (got[1] - normal[1]).abs().max().item() > 1e-3


def test_skip_mask_needs_a_strategy() -> None:
    ours, _ = _pair(TINY_2B)
    x = _inputs(TINY_2B)
    with pytest.raises(ValueError, match="go together"):
        _run_ours(ours, x, skip_layer_mask=torch.ones(TINY_2B.num_layers, 2))


# --------------------------------------------------------------------------------------------------------------------
# bf16
# --------------------------------------------------------------------------------------------------------------------


def test_bf16_close_to_fp32() -> None:
    cfg = TINY_13B
    ours, _ = _pair(cfg)
    x = _inputs(cfg)
    want = _run_ours(ours, x)
    low = Transformer(cfg).eval()
    low.load_state_dict(ours.state_dict())
    low = low.to(torch.bfloat16)
    xb = {k: (v.to(torch.bfloat16) if k in ("tokens", "context") else v) for k, v in x.items()}
    got = _run_ours(low, xb)
    assert got.dtype == torch.bfloat16
    rel = (got.float() - want).abs().max().item() / want.abs().max().item()
    assert rel < 2e-2, rel  # measured 8.2e-3 here (7.8e-3 .. 1.05e-2 over seeds and both tiny sizes)


@pytest.mark.parametrize("strategy", [None, *REF_STRATEGY], ids=lambda s: "plain" if s is None else s.value)
def test_bf16_matches_reference_bf16(strategy: SkipLayerStrategy | None) -> None:
    """Same rounding points as the reference (RMSNorm rounds before the gain, tables cast once...): on CPU the bf16
    outputs are bit-identical."""
    cfg = TINY_2B
    ours, ref = _pair(cfg)
    ours, ref = ours.to(torch.bfloat16), ref.to(torch.bfloat16)
    x = _inputs(cfg)
    x = {k: (v.to(torch.bfloat16) if k in ("tokens", "context") else v) for k, v in x.items()}
    kw_ours, kw_ref = {}, {}
    if strategy is not None:
        mask = _skip_mask(cfg).to(torch.bfloat16)
        kw_ours = {"skip_layer_mask": mask, "skip_layer_strategy": strategy}
        kw_ref = {"skip_layer_mask": mask, "skip_layer_strategy": REF_STRATEGY[strategy]}
    assert torch.equal(_run_ours(ours, x, **kw_ours), _run_ref(ref, x, **kw_ref))


# --------------------------------------------------------------------------------------------------------------------
# RoPE
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY_2B, TINY_13B, TRANSFORMER_2B, TRANSFORMER_13B], ids=["t2b", "t13b", "2b", "13b"])
def test_rope_tables_match_reference(cfg: TransformerConfig) -> None:
    with torch.device("meta"):
        ref = ref_t3d.Transformer3DModel.from_config(cfg.to_dict())
    positions = pixel_positions(latent_grid(4, 3, 5, 2), causal_fix=True, frame_rate=30.0)
    positions[1] += torch.tensor([[0.7], [64.0], [96.0]])  # second element shifted, including fractional time
    want_cos, want_sin = ref.precompute_freqs_cis(positions)
    cos, sin = rope_tables(
        positions, cfg.inner_dim, cfg.positional_embedding_theta, cfg.positional_embedding_max_pos, torch.float32
    )
    assert cos.shape == (2, 60, cfg.inner_dim)
    assert torch.equal(cos, want_cos)
    assert torch.equal(sin, want_sin)
    # The D % 6 leading channels are not rotated.
    pad = cfg.inner_dim % 6
    assert pad > 0 and torch.all(cos[..., :pad] == 1) and torch.all(sin[..., :pad] == 0)
    bf_cos, _ = rope_tables(positions, cfg.inner_dim, 10000.0, cfg.positional_embedding_max_pos, torch.bfloat16)
    assert bf_cos.dtype == torch.bfloat16 and torch.equal(bf_cos, cos.to(torch.bfloat16))


def test_apply_rope_matches_reference_and_is_a_rotation() -> None:
    d = 128
    positions = pixel_positions(latent_grid(2, 3, 4, 1), causal_fix=False, frame_rate=25.0)
    cos, sin = rope_tables(positions, d, 10000.0, (20.0, 2048.0, 2048.0), torch.float32)
    x = torch.randn(1, 24, d)
    got = apply_rope(x, cos, sin)
    assert torch.equal(got, ref_attention.Attention.apply_rotary_emb(x, (cos, sin)))
    # Each pair (2i, 2i+1) keeps its norm, and the rotation is by exactly the table's angle.
    pairs, rot = x.view(1, 24, -1, 2), got.view(1, 24, -1, 2)
    torch.testing.assert_close(rot.norm(dim=-1), pairs.norm(dim=-1), rtol=1e-5, atol=1e-6)
    angle = torch.atan2(sin[..., ::2], cos[..., ::2])
    expected_x = pairs[..., 0] * angle.cos() - pairs[..., 1] * angle.sin()
    torch.testing.assert_close(rot[..., 0], expected_x, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Patchify and positions
# --------------------------------------------------------------------------------------------------------------------


def test_patchify_matches_reference_and_round_trips() -> None:
    f, h, w = GRID
    latents = torch.randn(2, 16, f, h, w)
    want_tokens, want_coords = ref_patchifier.SymmetricPatchifier(patch_size=1).patchify(latents)
    tokens = patchify(latents)
    assert torch.equal(tokens, want_tokens)
    coords = latent_grid(f, h, w, 2)
    assert coords.dtype == want_coords.dtype and torch.equal(coords, want_coords)
    assert torch.equal(unpatchify(tokens, f, h, w), latents)
    ref_back = ref_patchifier.SymmetricPatchifier(patch_size=1).unpatchify(tokens, h, w, 16)
    assert torch.equal(unpatchify(tokens, f, h, w), ref_back)
    # Token n sits at latent (n // (H W), (n // W) % H, n % W).
    n = torch.arange(f * h * w)
    assert torch.equal(coords[0], torch.stack([n // (h * w), (n // w) % h, n % w]))
    with pytest.raises(ValueError):
        unpatchify(tokens, f, h, w + 1)


@pytest.mark.parametrize("causal_fix", [True, False])
@pytest.mark.parametrize("frame_rate", [25.0, 30.0, 24.0])
def test_pixel_positions_match_reference(causal_fix: bool, frame_rate: float) -> None:
    coords = latent_grid(*GRID, 2)
    coords[1, 0] += 3  # a later-starting sequence, as conditioning tokens have
    # What the reference pipeline feeds its transformer: latent_to_pixel_coords, float32, time * (1 / frame_rate).
    want = ref_vae_encode.latent_to_pixel_coords_from_factors(coords, (8, 32, 32), causal_fix).to(torch.float32)
    want[:, 0] = want[:, 0] * (1.0 / frame_rate)
    got = pixel_positions(coords, causal_fix=causal_fix, frame_rate=frame_rate)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    frames = (got[0, 0].unique() * frame_rate).round()
    expected = [0.0, 1.0, 9.0] if causal_fix else [0.0, 8.0, 16.0]
    assert frames.tolist() == expected


# --------------------------------------------------------------------------------------------------------------------
# The real sizes: key names, shapes, parameter counts
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "params"), [(TRANSFORMER_2B, 1_923_385_472), (TRANSFORMER_13B, 13_042_569_344)], ids=["2b", "13b"]
)
def test_real_state_dict_matches_reference(cfg: TransformerConfig, params: int) -> None:
    with torch.device("meta"):
        ours = Transformer(cfg)
        ref = ref_t3d.Transformer3DModel.from_config(cfg.to_dict())
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in ours.parameters()) == params
    d = cfg.inner_dim
    assert got["transformer_blocks.0.attn1.to_out.0.weight"] == (d, d)
    assert got["adaln_single.linear.weight"] == (6 * d, d)
    assert got["caption_projection.linear_1.weight"] == (d, 4096)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_path_equals_inference_bit_for_bit_and_has_gradients(dtype: torch.dtype) -> None:
    """With gradients enabled the blocks run out of place (backward needs their inputs): the same numbers."""
    ours, _ = _pair(TINY_2B)
    ours = ours.to(dtype)
    x = _inputs(TINY_2B)
    x = {k: v.to(dtype) if k in ("tokens", "context") else v for k, v in x.items()}
    with torch.inference_mode():
        want = ours(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"])
    got = ours(x["tokens"], x["positions"], x["timesteps"], x["context"], x["context_mask"])
    assert torch.equal(got, want)
    got.float().square().mean().backward()
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert ours.transformer_blocks[0].attn1.to_q.weight.grad.abs().sum() > 0  # type: ignore[union-attr]
