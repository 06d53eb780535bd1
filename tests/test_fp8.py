"""FP8 transformer linears: closed-form forward, quantisation error bound, the official ``-fp8`` layout loaded as
stored, quantise-at-load vs quantise-after-load, weight memory at the 2B shape, and clear errors for malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import ltxv
from ltxv.config import TRANSFORMER_2B
from ltxv.model.transformer import Transformer
from ltxv.pipelines.request import GenerationRequest, PassSettings, Recipe
from ltxv.quant import FP8, Fp8Linear, fp8_linear_names, module_bytes, quantize_, quantize_fp8, swap_to_fp8
from ltxv.quant.fp8 import _quantize_activation, scaled_mm_linear
from ltxv.testing.checkpoints import CHECKPOINT_NAME, write_single_file, write_tiny_kit
from ltxv.weights.errors import LoadError

T = "model.diffusion_model."
# Per block: attn1 and attn2 (to_q, to_k, to_v, to_out.0) and ff (net.0.proj, net.2).
LINEARS_PER_BLOCK = 10


def _grid(shape: tuple[int, ...], values: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(values)
    return v[torch.randint(len(v), shape, generator=g)]


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _layer(w: torch.Tensor, b: torch.Tensor, scale: float | None) -> Fp8Linear:
    layer = Fp8Linear(w.shape[1], w.shape[0], scaled=scale is not None, dtype=b.dtype)
    layer.weight = nn.Parameter(w.to(FP8), requires_grad=False)
    layer.bias = nn.Parameter(b, requires_grad=False)
    if scale is not None:
        layer.weight_scale = torch.tensor(scale)
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [None, 0.25])
def test_forward_is_the_dequantised_product_exactly(dtype: torch.dtype, scale: float | None) -> None:
    # Values on a coarse binary grid: every product and partial sum is exact in the compute dtype, so any summation
    # order gives the closed form bit for bit.
    w = _grid((24, 16), [-1.0, -0.5, 0.0, 0.5, 1.0], 0)  # e4m3-exact
    x = _grid((3, 5, 16), [-2.0, -1.0, 0.0, 1.0, 2.0], 1)
    b = _grid((24,), [-1.0, 0.0, 0.5], 2)
    layer = _layer(w, b.to(dtype), scale)
    got = layer(x.to(dtype))
    expected = torch.einsum("bnk,ok->bno", x.double(), w.double() * (scale or 1.0)) + b.double()
    assert got.dtype == dtype
    assert torch.equal(got.double(), expected)
    assert torch.equal(layer.dequantized_weight(), w * (scale or 1.0))


def test_scaled_mm_path_matches_its_closed_form() -> None:
    """The tensor-core path (dynamic per-tensor fp8 input): x and w both quantised, product accumulated in fp32.
    Run through torch's CPU ``_scaled_mm`` here; on CUDA (cc >= 8.9) the layer takes this path by itself."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 64, generator=g)
    w, sw = quantize_fp8(torch.randn(48, 64, generator=g) / 8)
    b = torch.randn(48, generator=g)
    try:
        got = scaled_mm_linear(x, w, sw, b)
    except (RuntimeError, NotImplementedError) as e:  # a torch build without an fp8 GEMM on this device
        pytest.skip(f"torch._scaled_mm unavailable here: {e}")
    xq, sx = _quantize_activation(x.reshape(-1, 64))
    closed = (xq.double() * sx.double()) @ (w.double() * sw.double()).T + b.double()
    torch.testing.assert_close(got.double(), closed.view(2, 7, 48), rtol=1e-5, atol=1e-5)
    # ... and both operands quantised cost e4m3 precision, no more.
    exact = x.double() @ (w.double() * sw.double()).T + b.double()
    assert ((got.double() - exact).norm() / exact.norm()).item() < 2**-4


def test_cpu_forward_takes_the_upcast_path() -> None:
    w, s = quantize_fp8(torch.randn(32, 32))
    layer = _layer(torch.zeros(32, 32), torch.zeros(32), 1.0)
    layer.weight.data, layer.weight_scale = w, s
    x = torch.randn(4, 32)
    assert torch.equal(layer(x), x @ (w.float() * s).T)


def test_quantize_error_is_bounded_by_e4m3_precision() -> None:
    w = torch.randn(256, 512, generator=torch.Generator().manual_seed(3)) * 0.05
    q, s = quantize_fp8(w)
    assert q.dtype == FP8 and s.dtype == torch.float32 and s.shape == ()
    assert s.item() == pytest.approx(w.abs().max().item() / 448, rel=1e-6)
    deq = q.float() * s
    err = (deq - w).abs()
    # 3 mantissa bits: half an ulp is 2^-4 of a normal value; below 2^-6 * s the grid is uniform with step 2^-9 * s.
    assert (err <= torch.maximum(w.abs() * 2**-4, torch.full_like(w, 2**-10) * s) * (1 + 1e-6)).all()
    rel = (err.norm() / w.norm()).item()
    assert 2**-7 < rel < 2**-4  # quantisation really happened, at about e4m3's precision
    zero_q, zero_s = quantize_fp8(torch.zeros(3, 3))
    assert zero_s.item() == 1.0 and not zero_q.float().any()


def _stored(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return load_file(str(path)), metadata


@pytest.fixture(scope="module")
def fp8_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official -fp8 layout: bf16 file, block linears plain-cast to float8_e4m3fn, no scales."""
    return write_single_file(tmp_path_factory.mktemp("fp8") / "ltxv-fp8.safetensors", dtype=torch.bfloat16, fp8="cast")


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_single_file(tmp_path_factory.mktemp("fp32") / "ltxv.safetensors")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("quantize", [None, "fp8"])
def test_official_fp8_file_loads_as_stored(fp8_file: Path, dtype: torch.dtype, quantize: str | None) -> None:
    tensors, _ = _stored(fp8_file)
    n_fp8 = sum(t.dtype == FP8 for t in tensors.values())
    assert n_fp8 == LINEARS_PER_BLOCK * 2  # the writer follows the official layout: block linear weights only
    tr = ltxv.load_models(fp8_file, dtype=dtype, quantize=quantize).transformer
    state = tr.state_dict()
    assert set(state) == {k[len(T) :] for k in tensors if k.startswith(T)}  # official key names, no scale entries
    swapped = {n for n, m in tr.named_modules() if isinstance(m, Fp8Linear)}
    assert len(swapped) == n_fp8 and all(not tr.get_submodule(n).scaled for n in swapped)
    for name, t in state.items():
        src = tensors[T + name]
        if src.dtype == FP8:  # kept bit for bit, never upcast
            assert t.dtype == FP8 and _bits_equal(t, src)
        else:
            assert t.dtype == dtype and torch.equal(t, src.to(dtype))
    assert tr.transformer_blocks[0].attn1.to_q.weight_scale.item() == 1.0
    assert isinstance(tr.patchify_proj, nn.Linear) and isinstance(tr.adaln_single.linear, nn.Linear)


def test_fp8_pipeline_equals_the_dequantised_model(tmp_path: Path) -> None:
    """End to end through ``ltxv.load``: the fp8 kit generates exactly the video of the same kit with its fp8 weights
    upcast to fp32 in the file (the upcast forward is weight-only fp8)."""
    kit = write_tiny_kit(tmp_path / "fp8", fp8="cast")
    tensors, metadata = _stored(kit.checkpoint)
    upcast = tmp_path / "upcast" / CHECKPOINT_NAME
    upcast.parent.mkdir()
    save_file({k: v.float() for k, v in tensors.items()}, str(upcast), metadata=metadata)

    req = GenerationRequest(
        prompt="a red fox runs through snow",
        height=64,
        width=96,
        num_frames=9,
        seed=5,
        recipe=Recipe(first_pass=PassSettings(num_inference_steps=3, guidance_scale=2.0), decode_timestep=0.05),
    )
    fp8_pipe = ltxv.load(kit.checkpoint, text_encoder=kit.text_encoder, dtype=torch.float32)
    assert isinstance(fp8_pipe.models.transformer.transformer_blocks[1].ff.net[2], Fp8Linear)
    got = fp8_pipe.generate(req).video
    ref = ltxv.load(upcast, text_encoder=kit.text_encoder, dtype=torch.float32).generate(req).video
    assert got.shape == (9, 64, 96, 3) and torch.isfinite(got).all()
    assert torch.equal(got, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_at_load_equals_quantize_after_load(fp32_file: Path, dtype: torch.dtype) -> None:
    at_load = ltxv.load_models(fp32_file, dtype=dtype, quantize="fp8").transformer
    after = quantize_(ltxv.load_models(fp32_file, dtype=dtype).transformer)
    a, b = at_load.state_dict(), after.state_dict()
    assert set(a) == set(b)
    assert sum(k.endswith(".weight_scale") for k in a) == LINEARS_PER_BLOCK * 2
    assert all(_bits_equal(a[k], b[k]) for k in a)
    assert [type(m) for m in at_load.modules()] == [type(m) for m in after.modules()]
    assert a["transformer_blocks.0.attn1.to_q.weight"].dtype == FP8
    assert a["transformer_blocks.0.attn1.to_q.bias"].dtype == dtype
    assert a["transformer_blocks.0.attn1.to_q.weight_scale"].dtype == torch.float32


def test_scaled_fp8_file_round_trip(tmp_path: Path, fp32_file: Path) -> None:
    """A file with per-tensor ``weight_scale`` entries (what quantise_ holds) loads to the same state as quantising
    the fp32 file at load."""
    scaled = write_single_file(tmp_path / "scaled.safetensors", fp8="scaled")
    a = ltxv.load_models(scaled, quantize=None).transformer.state_dict()
    b = ltxv.load_models(fp32_file, quantize="fp8").transformer.state_dict()
    assert set(a) == set(b)
    assert all(_bits_equal(a[k], b[k]) for k in a)


def test_module_to_dtype_keeps_fp8(fp8_file: Path) -> None:
    tr = ltxv.load_models(fp8_file, dtype=torch.float32).transformer
    before = tr.transformer_blocks[0].ff.net[0].proj.weight.clone()
    tr.to(torch.bfloat16)
    layer = tr.transformer_blocks[0].ff.net[0].proj
    assert _bits_equal(layer.weight, before)
    assert layer.weight_scale.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16
    assert tr.patchify_proj.weight.dtype == torch.bfloat16


def test_meta_swap_keeps_official_keys() -> None:
    with torch.device("meta"):
        model = Transformer(TRANSFORMER_2B)
        keys = {k: v.shape for k, v in model.state_dict().items()}
        swap_to_fp8(model)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    assert sum(isinstance(m, Fp8Linear) for m in model.modules()) == LINEARS_PER_BLOCK * 28
    assert all(not b.is_meta for b in model.buffers())  # the constant scales need no checkpoint


def test_transformer_weight_bytes_fp8_vs_bf16_at_2b_shape() -> None:
    with torch.device("meta"):
        bf16 = Transformer(TRANSFORMER_2B).to(torch.bfloat16)
        names = fp8_linear_names(bf16)
        linear_params = sum(bf16.get_submodule(n).weight.numel() for n in names)
        fp8 = swap_to_fp8(Transformer(TRANSFORMER_2B).to(torch.bfloat16), scaled=True)
    b16, b8 = module_bytes(bf16), module_bytes(fp8)
    assert len(names) == LINEARS_PER_BLOCK * 28
    assert b16 == 2 * sum(p.numel() for p in bf16.parameters())
    assert b8 == b16 - linear_params + 4 * len(names)  # one byte per fp8 weight, a float32 scale per layer
    assert b8 / b16 <= 0.55
    assert b8 / b16 == pytest.approx(0.5115, abs=5e-4)


# --- malformed files -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(fp8_file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return _stored(fp8_file)


def _rewrite(base: tuple[dict, dict], path: Path, edit: dict[str, torch.Tensor | None]) -> Path:
    tensors, metadata = base
    tensors = dict(tensors)
    for k, v in edit.items():
        if v is None:
            del tensors[k]
        else:
            tensors[k] = v
    save_file(tensors, str(path), metadata=metadata)
    return path


Q = T + "transformer_blocks.0.attn1.to_q."


def _malformed(base: tuple[dict, dict]) -> dict[str, tuple[dict, str]]:
    t = base[0]
    scales = {Q + "weight_scale": torch.tensor(0.01)}
    return {
        "fp8 outside the blocks": (
            {T + "patchify_proj.weight": t[T + "patchify_proj.weight"].to(FP8)},
            r"float8 where ltxv has no fp8 layer: patchify_proj\.weight",
        ),
        "fp8 bias": ({Q + "bias": t[Q + "bias"].to(FP8)}, r"no fp8 layer: transformer_blocks\.0\.attn1\.to_q\.bias"),
        "fp8 in the VAE": (
            {"vae.decoder.conv_in.conv.weight": t["vae.decoder.conv_in.conv.weight"].to(FP8)},
            r"VAE tensor\(s\) stored as float8",
        ),
        "e5m2": ({Q + "weight": t[Q + "weight"].float().to(torch.float8_e5m2)}, r"unsupported dtype.*float8_e5m2"),
        "ComfyUI scaled fp8": ({Q + "scale_weight": torch.tensor(1.0)}, r"layout ltxv does not read.*scale_weight"),
        "static input scale": ({Q + "input_scale": torch.tensor(1.0)}, r"layout ltxv does not read.*input_scale"),
        "scales for some layers only": (scales, r"must come with exactly the fp8 linear weights: 1 scale\(s\) for 20"),
        "per-channel scale": (
            {k.removesuffix("weight") + "weight_scale": torch.tensor(1.0) for k, v in t.items() if v.dtype == FP8}
            | {Q + "weight_scale": torch.ones(t[Q + "weight"].shape[0])},
            r"wrong shape: transformer_blocks\.0\.attn1\.to_q\.weight_scale is \[128\], expected \[\]",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "fp8 outside the blocks",
        "fp8 bias",
        "fp8 in the VAE",
        "e5m2",
        "ComfyUI scaled fp8",
        "static input scale",
        "scales for some layers only",
        "per-channel scale",
    ],
)
def test_malformed_fp8_files_raise_load_error(base, tmp_path: Path, case: str) -> None:
    edit, message = _malformed(base)[case]
    path = _rewrite(base, tmp_path / "bad.safetensors", edit)
    with pytest.raises(LoadError, match=message):
        ltxv.load_models(path)


def test_fp8_upsampler_and_unknown_mode_are_refused(tmp_path: Path, fp32_file: Path) -> None:
    from ltxv.testing.checkpoints import write_upsampler_file
    from ltxv.weights.load import load_upsampler

    up = write_upsampler_file(tmp_path / "up.safetensors")
    tensors, metadata = _stored(up)
    name = next(k for k, v in tensors.items() if v.ndim > 1)
    save_file({**tensors, name: tensors[name].to(FP8)}, str(up), metadata=metadata)
    with pytest.raises(LoadError, match=r"upsampler tensor.*stored as float8"):
        load_upsampler(up)
    with pytest.raises(ValueError, match="quantize must be"):
        ltxv.load_models(fp32_file, quantize="int8")
