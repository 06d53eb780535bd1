"""LoRA files in every key style, merged into the weights: the formula, diffusers' own loader, fp8, switching."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltxv.lora import LoraError, LoraMerger, linear_shapes, read_lora
from ltxv.lora.keys import ModuleTable, parse_key, refused_layout
from ltxv.model.transformer import Transformer
from ltxv.quant.fp8 import FP8, Fp8Linear, quantize_
from ltxv.testing.configs import TINY_2B
from ltxv.testing.loras import (
    IC_LORA_TARGETS,
    STYLES,
    Factors,
    block_targets,
    lora_state_dict,
    random_factors,
    write_lora,
)
from ltxv.testing.random_weights import random_state_dict

TOL = 1e-6  # float32 weights of size ~0.1-1: one rounding of W + delta


@pytest.fixture(scope="module")
def base_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        meta = Transformer(TINY_2B)
    return random_state_dict(meta, 0)


def _model(sd: dict[str, torch.Tensor]) -> Transformer:
    model = Transformer(TINY_2B).eval().requires_grad_(False)
    model.load_state_dict({k: v.clone() for k, v in sd.items()})
    return model


@pytest.fixture(scope="module")
def shapes(base_sd) -> dict[str, tuple[int, int]]:
    return linear_shapes(_model(base_sd))


def _mixed(shapes: dict, seed: int, targets=IC_LORA_TARGETS) -> dict[str, Factors]:
    """Factors with ranks 2/4/8 and alphas that differ from the rank on some modules."""
    names = block_targets(shapes, targets)
    ranks = {n: (2, 4, 8)[i % 3] for i, n in enumerate(names)}
    alphas = {n: (ranks[n] if i % 2 else 3.0 * (i + 1)) for i, n in enumerate(names)}
    return random_factors(shapes, names, ranks, seed=seed, alpha=alphas)


def _assert_merged(model: Transformer, sd: dict, expected: dict[str, torch.Tensor], tol: float = TOL) -> float:
    """Every linear in ``expected`` (module -> float64 target weight) within ``tol``; every other tensor untouched."""
    worst = 0.0
    state = model.state_dict()
    for key, base in sd.items():
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in expected:
            diff = (state[key].double() - expected[module]).abs().max().item()
            assert diff <= tol, (key, diff)
            worst = max(worst, diff)
        else:
            assert torch.equal(state[key], base), key
    return worst


# --- key styles, key by key -----------------------------------------------------------------------------------------

KEYS = [
    # (file key, module as the file spells it, role, prefix style, flattened)
    (
        "transformer.transformer_blocks.7.attn1.to_q.lora_A.weight",
        "transformer_blocks.7.attn1.to_q",
        "down",
        "diffusers",
        False,
    ),
    (
        "transformer.transformer_blocks.7.attn1.to_q.lora_B.weight",
        "transformer_blocks.7.attn1.to_q",
        "up",
        "diffusers",
        False,
    ),
    ("transformer.proj_in.lora_A.weight", "proj_in", "down", "diffusers", False),
    (
        "diffusion_model.transformer_blocks.0.attn2.to_out.0.lora_B.weight",
        "transformer_blocks.0.attn2.to_out.0",
        "up",
        "ComfyUI",
        False,
    ),
    (
        "model.diffusion_model.transformer_blocks.3.ff.net.0.proj.lora_A.weight",
        "transformer_blocks.3.ff.net.0.proj",
        "down",
        "ComfyUI",
        False,
    ),
    ("transformer_blocks.1.ff.net.2.lora_B.weight", "transformer_blocks.1.ff.net.2", "up", "none", False),
    ("transformer_blocks.1.attn1.to_k.lora_A.default.weight", "transformer_blocks.1.attn1.to_k", "down", "none", False),
    (
        "diffusion_model.transformer_blocks.1.attn1.to_v.lora_down.weight",
        "transformer_blocks.1.attn1.to_v",
        "down",
        "ComfyUI",
        False,
    ),
    (
        "diffusion_model.transformer_blocks.1.attn1.to_v.lora_up.weight",
        "transformer_blocks.1.attn1.to_v",
        "up",
        "ComfyUI",
        False,
    ),
    (
        "diffusion_model.transformer_blocks.1.attn1.to_v.alpha",
        "transformer_blocks.1.attn1.to_v",
        "alpha",
        "ComfyUI",
        False,
    ),
    ("transformer_blocks.2.attn1.to_q.lora.down.weight", "transformer_blocks.2.attn1.to_q", "down", "none", False),
    (
        "transformer_blocks.2.attn1.to_q.lora_linear_layer.up.weight",
        "transformer_blocks.2.attn1.to_q",
        "up",
        "none",
        False,
    ),
    (
        "lora_unet_transformer_blocks_7_attn1_to_out_0.lora_down.weight",
        "transformer_blocks_7_attn1_to_out_0",
        "down",
        "kohya",
        True,
    ),
    (
        "lora_unet_transformer_blocks_7_attn1_to_out_0.alpha",
        "transformer_blocks_7_attn1_to_out_0",
        "alpha",
        "kohya",
        True,
    ),
    ("lora_unet_adaln_single_linear.lora_up.weight", "adaln_single_linear", "up", "kohya", True),
]


@pytest.mark.parametrize(("key", "module", "role", "prefix", "flat"), KEYS, ids=[k[0] for k in KEYS])
def test_parse_key(key: str, module: str, role: str, prefix: str, flat: bool) -> None:
    p = parse_key(key)
    assert p is not None
    assert (p.module, p.role, p.prefix, p.flat) == (module, role, prefix, flat)


@pytest.mark.parametrize(
    ("key", "layout"),
    [
        ("transformer.transformer_blocks.0.attn1.to_q.dora_scale", "DoRA"),
        ("transformer_blocks.0.attn1.to_q.lora_magnitude_vector", "DoRA"),
        ("lora_unet_transformer_blocks_0_attn1_to_q.hada_w1_a", "LoHa"),
        ("lora_unet_transformer_blocks_0_attn1_to_q.lokr_w1", "LoKr"),
        ("transformer_blocks.0.attn1.to_q.lora_mid.weight", "LoCon"),
        ("diffusion_model.transformer_blocks.0.attn1.to_q.diff", "weight or bias difference"),
        ("diffusion_model.transformer_blocks.0.attn1.to_q.diff_b", "weight or bias difference"),
        ("transformer.transformer_blocks.0.attn1.to_q.lora_B.bias", "LoRA bias"),
    ],
)
def test_refused_layouts_are_named(key: str, layout: str) -> None:
    assert layout in (refused_layout(key) or "")


@pytest.mark.parametrize(
    "key",
    [
        "model.diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight",  # ".diffusion" is not a ".diff" key
        "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight",
    ],
)
def test_plain_keys_are_not_refused(key: str) -> None:
    assert refused_layout(key) is None


def test_every_linear_resolves_in_every_spelling(shapes) -> None:
    table = ModuleTable(shapes)
    aliases = {"patchify_proj": "proj_in", "adaln_single": "time_embed"}
    for name in shapes:
        head, _, rest = name.partition(".")
        theirs = aliases.get(head, head) + (f".{rest}" if rest else "")
        for spelling in {name, theirs}:
            for prefix in ("transformer.", "diffusion_model.", "model.diffusion_model.", ""):
                assert table.resolve(parse_key(f"{prefix}{spelling}.lora_A.weight")) == name
            flat = "lora_unet_" + spelling.replace(".", "_")
            assert table.resolve(parse_key(f"{flat}.lora_down.weight")) == name
    assert table.resolve(parse_key("transformer.transformer_blocks.9.attn1.to_q.lora_A.weight")) is None
    assert table.resolve(parse_key("transformer.transformer_blocks.0.attn1.q_norm.lora_A.weight")) is None  # no linear


def test_diffusers_module_names_resolve_to_the_same_linears(base_sd) -> None:
    """Every linear of diffusers' LTX transformer, by its own name, resolves to ltxv's linear holding its weight."""
    pytest.importorskip("diffusers")
    port = _diffusers_port()
    theirs = port.diffusers_transformer({k: v.clone() for k, v in base_sd.items()}, TINY_2B)
    ours = _model(base_sd)
    table = ModuleTable(linear_shapes(ours))
    names = [n for n, m in theirs.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(names) == len(linear_shapes(ours))
    for name in names:
        mine = table.resolve(parse_key(f"transformer.{name}.lora_A.weight"))
        assert mine is not None, name
        assert torch.equal(theirs.get_submodule(name).weight, ours.get_submodule(mine).weight), name


# --- the merge: the formula, every style ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("alpha_tensors", [None, True], ids=["style-default", "alpha-tensors"])
def test_merge_equals_the_formula(tmp_path: Path, base_sd, shapes, style: str, alpha_tensors: bool | None) -> None:
    f1, f2 = _mixed(shapes, 1), random_factors(shapes, block_targets(shapes, ("to_q", "ff.net.2")), 3, seed=2)
    if style in ("peft", "comfyui", "comfyui-full") and not alpha_tensors:
        f1 = {n: Factors(f.down, f.up, float(f.down.shape[0])) for n, f in f1.items()}  # nothing to carry alpha
    a = write_lora(tmp_path / "a.safetensors", f1, style, alpha_tensors=alpha_tensors)
    b = write_lora(tmp_path / "b.safetensors", f2, style, alpha_tensors=alpha_tensors)
    model = _model(base_sd)
    LoraMerger(model).apply([(a, 0.5), (b, -0.7)])
    expected = {}
    for name in set(f1) | set(f2):
        w = base_sd[f"{name}.weight"].double()
        w = w + (f1[name].delta(0.5) if name in f1 else 0) + (f2[name].delta(-0.7) if name in f2 else 0)
        expected[name] = w
    _assert_merged(model, base_sd, expected)


def test_rank_and_alpha_per_module_are_read(tmp_path: Path, shapes) -> None:
    f = _mixed(shapes, 3)
    for style in ("diffusers", "kohya", "kohya-flat"):
        lora = read_lora(write_lora(tmp_path / f"{style}.safetensors", f, style), shapes)
        assert {n: (x.rank, x.alpha) for n, x in lora.modules.items()} == {
            n: (x.down.shape[0], x.alpha) for n, x in f.items()
        }


def test_rslora_metadata_scales_by_the_square_root_of_the_rank(tmp_path: Path, base_sd, shapes) -> None:
    f = random_factors(shapes, block_targets(shapes), 4, seed=5, alpha=6.0)
    meta = {
        "lora_adapter_metadata": '{"transformer.r": 4, "transformer.lora_alpha": 6.0, "transformer.use_rslora": true}'
    }
    path = write_lora(tmp_path / "rs.safetensors", f, "diffusers", metadata=False, extra_metadata=meta)
    model = _model(base_sd)
    LoraMerger(model).apply([(path, 1.0)])
    expected = {n: base_sd[f"{n}.weight"].double() + x.delta() * 2.0 for n, x in f.items()}  # alpha/sqrt(4) = 2 alpha/4
    _assert_merged(model, base_sd, expected)


# --- the merge against diffusers' own LoRA loader --------------------------------------------------------------------


def _diffusers_port():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import diffusers_port

    return diffusers_port


@pytest.mark.parametrize("style", ["diffusers", "comfyui"])
def test_merge_equals_diffusers_load_lora_weights_and_set_adapters(tmp_path: Path, base_sd, shapes, style) -> None:
    """Two adapters in a style diffusers reads (alpha in its metadata where the style can hold it, ranks per module),
    weighted by ``set_adapters`` and fused: the same weights as ltxv's merge."""
    pytest.importorskip("peft")
    from diffusers.loaders import LTXVideoLoraLoaderMixin

    class Holder(LTXVideoLoraLoaderMixin):  # the LoRA half of LTXPipeline, without T5 and the VAE
        hf_device_map = None

        def __init__(self, transformer: torch.nn.Module) -> None:
            self.transformer = transformer

        @property
        def components(self) -> dict:
            return {"transformer": self.transformer}

    f1 = _mixed(shapes, 1)
    if style == "comfyui":  # diffusers reads no alpha from these files: alpha = rank
        f1 = {n: Factors(f.down, f.up, float(f.down.shape[0])) for n, f in f1.items()}
    f2 = random_factors(shapes, block_targets(shapes, ("to_v", "ff.net.0.proj")), 6, seed=4)
    a = write_lora(tmp_path / "a.safetensors", f1, style)
    b = write_lora(tmp_path / "b.safetensors", f2, style)
    theirs = _diffusers_port().diffusers_transformer({k: v.clone() for k, v in base_sd.items()}, TINY_2B)
    pipe = Holder(theirs)
    pipe.load_lora_weights(str(a), adapter_name="s1")
    pipe.load_lora_weights(str(b), adapter_name="s2")
    pipe.set_adapters(["s1", "s2"], [0.5, -0.7])
    pipe.fuse_lora(adapter_names=["s1", "s2"])
    ours = _model(base_sd)
    LoraMerger(ours).apply([(a, 0.5), (b, -0.7)])
    worst = 0.0
    for name in set(f1) | set(f2):
        got, want = ours.get_submodule(name).weight, theirs.get_submodule(name).get_base_layer().weight
        worst = max(worst, (got - want).abs().max().item())
    print(f"max |ltxv - diffusers| = {worst:.2e}")
    assert worst <= TOL


# --- fp8 -------------------------------------------------------------------------------------------------------------


def test_fp8_merge_is_the_formula_within_fp8_rounding_and_restores_exactly(tmp_path: Path, base_sd, shapes) -> None:
    f = _mixed(shapes, 6)
    path = write_lora(tmp_path / "a.safetensors", f, "diffusers")
    model = quantize_(_model(base_sd))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merger = LoraMerger(model)
    merger.apply([(path, 0.8)])
    for name, x in f.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, Fp8Linear) and layer.weight.dtype == FP8
        base = before[f"{name}.weight"].double() * before[f"{name}.weight_scale"].double()
        want = base + x.delta(0.8)
        got = layer.dequantized_weight(torch.float64)
        # e4m3: 3 mantissa bits, so a normal value rounds within 2^-4 of itself; subnormals within 2^-10 * scale.
        bound = 2.0**-4 * want.abs() + 2.0**-10 * float(layer.weight_scale) + 1e-7
        assert bool(((got - want).abs() <= bound).all()), name
    merger.apply([])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_fp8_plain_cast_layers_become_scaled_and_come_back(tmp_path: Path, base_sd, shapes) -> None:
    from ltxv.quant.fp8 import swap_to_fp8

    model = swap_to_fp8(_model(base_sd))  # empty fp8 layers, filled with plain casts as the official -fp8 files
    for name, layer in model.named_modules():
        if isinstance(layer, Fp8Linear):
            layer.weight.data = base_sd[f"{name}.weight"].to(FP8)
            layer.bias.data = base_sd[f"{name}.bias"].clone()
    f = random_factors(shapes, block_targets(shapes), 4, seed=7)
    merger = LoraMerger(model)
    merger.apply([(write_lora(tmp_path / "a.safetensors", f), 1.0)])
    layer = model.get_submodule(next(iter(f)))
    assert layer.scaled and float(layer.weight_scale) != 1.0
    merger.apply([])
    assert not layer.scaled and float(layer.weight_scale) == 1.0
    assert torch.equal(layer.weight.view(torch.uint8), base_sd[f"{next(iter(f))}.weight"].to(FP8).view(torch.uint8))


# --- switching --------------------------------------------------------------------------------------------------------


def test_switching_sets_is_exact_and_empty_restores_the_base(tmp_path: Path, base_sd, shapes) -> None:
    a = write_lora(tmp_path / "a.safetensors", _mixed(shapes, 1), "diffusers")
    b = write_lora(tmp_path / "b.safetensors", _mixed(shapes, 2, ("to_q", "ff.net.2")), "kohya")
    model = _model(base_sd)
    merger = LoraMerger(model)
    merger.apply([(a, 1.0)])
    only_a = {k: v.clone() for k, v in model.state_dict().items()}
    for chosen in ([(b, 0.3)], [(a, 1.0), (b, 2.0)], [(a, 1.0)]):
        merger.apply(chosen)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in only_a.items())  # from the base copy: no drift
    merger.apply([])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base_sd.items())
    assert merger.active == ()


def test_a_changed_file_is_read_again(tmp_path: Path, base_sd, shapes) -> None:
    path = tmp_path / "a.safetensors"
    names = block_targets(shapes)
    write_lora(path, random_factors(shapes, names, 4, seed=1))
    model = _model(base_sd)
    merger = LoraMerger(model)
    merger.apply([(path, 1.0)])
    second = random_factors(shapes, names, 2, seed=9)
    write_lora(path, second)  # a different size: a new cache key even within the mtime's resolution
    merger.apply([(path, 1.0)])
    expected = {n: base_sd[f"{n}.weight"].double() + x.delta() for n, x in second.items()}
    _assert_merged(model, base_sd, expected)


# --- strictness -------------------------------------------------------------------------------------------------------


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def _pair(module: str = "transformer_blocks.0.attn1.to_q", r: int = 2, i: int = 128, o: int = 128) -> dict:
    return {
        f"transformer.{module}.lora_A.weight": torch.zeros(r, i),
        f"transformer.{module}.lora_B.weight": torch.zeros(o, r),
    }


@pytest.mark.parametrize(
    ("tensors", "metadata", "needle"),
    [
        (_pair("transformer_blocks.5.attn1.to_q"), None, "transformer.transformer_blocks.5.attn1.to_q.lora_A.weight"),
        (_pair(i=64), None, "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"),
        (_pair(o=96), None, "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"),
        ({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 128)}, None, "no matching up"),
        ({**_pair(), "transformer.transformer_blocks.0.attn1.to_q.dora_scale": torch.ones(1, 128)}, None, "DoRA"),
        ({**_pair(), "transformer.transformer_blocks.0.norm.weight": torch.ones(4)}, None, "not a LoRA key"),
        (
            {**_pair(), "lora_te_text_model_encoder_layers_0_q_proj.lora_down.weight": torch.ones(2, 4)},
            None,
            "text-encoder",
        ),
        ({"model.diffusion_model.patchify_proj.weight": torch.zeros(128, 16)}, None, "no LoRA keys"),
        (_pair(), {"lora_adapter_metadata": '{"transformer.r": 8}'}, "says r=8"),
        (_pair(), {"lora_adapter_metadata": "{not json"}, "not valid JSON"),
        (_pair(), {"lora_adapter_metadata": '{"transformer.use_dora": true}'}, "DoRA"),
        (_pair(), {"reference_downscale_factor": "2"}, "reference_downscale_factor"),
        ({**_pair(), "transformer.transformer_blocks.0.attn1.to_q.alpha": torch.ones(3)}, None, "expected one number"),
    ],
    ids=[
        "no-such-module",
        "down-shape",
        "up-shape",
        "half-pair",
        "dora",
        "stray-key",
        "text-encoder",
        "checkpoint-not-lora",
        "metadata-rank",
        "metadata-json",
        "metadata-dora",
        "ltx2-downscale",
        "alpha-shape",
    ],
)
def test_bad_files_are_errors_naming_the_problem(tmp_path: Path, shapes, tensors, metadata, needle) -> None:
    path = _write(tmp_path / "bad.safetensors", tensors, metadata)
    with pytest.raises(LoraError, match=r"bad\.safetensors") as e:
        read_lora(path, shapes)
    assert needle in str(e.value)
    with pytest.raises(LoraError):  # the header-only check finds the same problems
        read_lora(path, shapes, load=False)


def test_pickles_and_missing_files_are_refused(tmp_path: Path, shapes) -> None:
    pt = tmp_path / "lora.pt"
    torch.save(lora_state_dict(random_factors(shapes, block_targets(shapes), 2), "diffusers"), pt)
    with pytest.raises(LoraError, match="only safetensors"):
        read_lora(pt, shapes)
    renamed = pt.rename(tmp_path / "lora.safetensors")
    with pytest.raises(LoraError, match="pickled"):
        read_lora(renamed, shapes)
    with pytest.raises(LoraError, match="no such file"):
        LoraMerger(_model_for(shapes)).apply([(tmp_path / "missing.safetensors", 1.0)])


def _model_for(shapes: dict) -> Transformer:
    return Transformer(TINY_2B)


def test_bad_scales_and_failed_sets_leave_the_weights_alone(tmp_path: Path, base_sd, shapes) -> None:
    good = write_lora(tmp_path / "a.safetensors", random_factors(shapes, block_targets(shapes), 2))
    bad = _write(tmp_path / "bad.safetensors", _pair(i=64))
    model = _model(base_sd)
    merger = LoraMerger(model)
    for chosen in ([(good, float("nan"))], [(good, 1.0), (bad, 1.0)]):
        with pytest.raises(LoraError):
            merger.apply(chosen)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in base_sd.items())


def test_bf16_weights_merge_within_one_rounding(tmp_path: Path, base_sd, shapes) -> None:
    """A bf16 model: one bf16 LoRA takes the one-GEMM path (float32 accumulation inside), two LoRAs the float32 path;
    both round W + delta once: within one bf16 ulp of the formula, nearly all exactly rounded."""
    f1 = random_factors(shapes, block_targets(shapes, IC_LORA_TARGETS), 8, seed=1, alpha=4.0, dtype=torch.bfloat16)
    f2 = random_factors(shapes, block_targets(shapes), 4, seed=2, dtype=torch.bfloat16)
    a, b = write_lora(tmp_path / "a.safetensors", f1), write_lora(tmp_path / "b.safetensors", f2)
    sd16 = {k: v.bfloat16() for k, v in base_sd.items()}
    for chosen in ([(a, 0.7)], [(a, 0.7), (b, -1.2)]):
        model = _model(sd16).to(torch.bfloat16)
        LoraMerger(model).apply(chosen)
        for name in f1:
            want = sd16[f"{name}.weight"].double() + f1[name].delta(0.7)
            if len(chosen) == 2 and name in f2:
                want = want + f2[name].delta(-1.2)
            got = model.get_submodule(name).weight.double()
            ulp = 2.0 ** (torch.floor(torch.log2(want.abs().clamp(min=1e-30))) - 7)  # bf16 spacing at want
            # plus float32's own rounding of the sum, which shows where the terms cancel to almost nothing
            bad = (got - want).abs() > ulp * 1.0001 + 2.0**-22 * float(want.abs().max())
            assert not bool(bad.any()), (name, len(chosen), got[bad][:3], want[bad][:3], ulp[bad][:3])
            assert (got == want.bfloat16().double()).float().mean() > 0.999  # nearly all exactly rounded
