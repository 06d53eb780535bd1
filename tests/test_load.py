"""Loading the official single-file format: the tiny kit round trip, the reference's own loader on the same files, and
every failure mode giving a LoadError that names the problem (never a half-loaded model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ltxv
from ltxv.config import CheckpointConfig
from ltxv.testing.checkpoints import write_single_file, write_upsampler_file
from ltxv.testing.configs import TINY_2B, TINY_13B, TINY_UPSAMPLER, TINY_VAE


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("kit")
    return write_single_file(d / "ckpt.safetensors", seed=1), write_upsampler_file(d / "up.safetensors", seed=1)


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def test_loads_tiny_kit_exactly(files: tuple[Path, Path]) -> None:
    ckpt, up = files
    m = ltxv.load_models(ckpt, upsampler=up)
    stored, meta = _tensors(ckpt)
    assert m.config == CheckpointConfig.from_metadata(meta)
    for k, v in m.transformer.state_dict().items():
        assert torch.equal(v, stored["model.diffusion_model." + k]), k
    for k, v in m.vae.state_dict().items():
        assert torch.equal(v, stored["vae." + k]), k
    assert m.upsampler is not None
    assert not any(p.requires_grad for p in m.transformer.parameters())
    assert ltxv.load_models(ckpt).upsampler is None


def test_bfloat16_load(files: tuple[Path, Path]) -> None:
    m = ltxv.load_models(files[0], upsampler=files[1], dtype=torch.bfloat16)
    for model in (m.transformer, m.vae, m.upsampler):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_reference_loader_reads_our_files_and_agrees(files: tuple[Path, Path]) -> None:
    """The reference's own from_pretrained on the same file computes what our loaded modules compute."""
    tr = pytest.importorskip("ltx_video.models.transformers.transformer3d")
    vae_mod = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
    up_mod = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    ckpt, up = files
    m = ltxv.load_models(ckpt, upsampler=up)
    ref_t = tr.Transformer3DModel.from_pretrained(str(ckpt)).float().eval()
    ref_v = vae_mod.CausalVideoAutoencoder.from_pretrained(str(ckpt)).float().eval()
    ref_u = up_mod.LatentUpsampler.from_pretrained(str(up)).float().eval()
    ours_t = m.transformer.state_dict()
    assert ours_t.keys() == ref_t.state_dict().keys()
    assert all(torch.equal(ours_t[k], v) for k, v in ref_t.state_dict().items())
    # The reference keeps the statistics as `mean_of_means` / `std_of_means` buffers of its own.
    ref_vsd = {k.replace("per_channel_statistics.", "").replace("-", "_"): v for k, v in ref_v.state_dict().items()}
    for k, v in m.vae.state_dict().items():
        assert torch.equal(v, ref_vsd[k.replace("per_channel_statistics.", "").replace("-", "_")]), k
    z = torch.randn(1, TINY_UPSAMPLER.in_channels, 2, 3, 5)
    with torch.no_grad():
        assert torch.allclose(m.upsampler.upsample_raw(z), ref_u(z), atol=1e-5)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    tensors, meta = _tensors(src)
    tensors, meta = edit(dict(tensors), dict(meta))
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _drop_key(t: dict, m: dict) -> tuple[dict, dict]:
    del t["model.diffusion_model.proj_out.weight"]
    return t, m


def _extra_key(t: dict, m: dict) -> tuple[dict, dict]:
    t["model.diffusion_model.transformer_blocks.9.attn1.to_q.weight"] = torch.zeros(2, 2)
    return t, m


def _stray_key(t: dict, m: dict) -> tuple[dict, dict]:
    t["text_encoder.shared.weight"] = torch.zeros(2, 2)
    return t, m


def _wrong_shape(t: dict, m: dict) -> tuple[dict, dict]:
    t["vae.decoder.conv_out.conv.bias"] = torch.zeros(7)
    return t, m


def _no_config(t: dict, m: dict) -> tuple[dict, dict]:
    return t, {"format": "pt"}


def _other_model_config(t: dict, m: dict) -> tuple[dict, dict]:
    # A 13B-shaped config over 2B-shaped tensors: every block tensor is the wrong size.
    cfg = json.loads(m["config"])
    cfg["transformer"] = TINY_13B.to_dict()
    return t, {"config": json.dumps(cfg)}


def _bad_config_value(t: dict, m: dict) -> tuple[dict, dict]:
    cfg = json.loads(m["config"])
    cfg["transformer"]["activation_fn"] = "geglu"
    return t, {"config": json.dumps(cfg)}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_key, r"transformer weights do not match.*missing 1 key\(s\): proj_out.weight"),
        (_extra_key, r"unexpected 1 key\(s\): transformer_blocks.9.attn1.to_q.weight"),
        (_stray_key, r"unexpected 1 key\(s\) outside.*text_encoder.shared.weight"),
        (_wrong_shape, r"VAE tensor\(s\) of the wrong shape: decoder.conv_out.conv.bias is \[7\], expected \[48\]"),
        (_no_config, r"metadata has no 'config' entry"),
        (_other_model_config, r"transformer tensor\(s\) of the wrong shape"),
        (_bad_config_value, r"activation_fn='geglu' is not supported"),
    ],
)
def test_broken_checkpoints_raise_load_error(files: tuple[Path, Path], tmp_path: Path, edit, message: str) -> None:
    bad = _rewrite(files[0], tmp_path / "bad.safetensors", edit)
    with pytest.raises(ltxv.LoadError, match=message):
        ltxv.load_models(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ltxv.LoadError, match="no such file"):
        ltxv.load_models(tmp_path / "nope.safetensors")


def test_missing_upsampler_fails_before_reading_the_checkpoint(files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ltxv.LoadError, match=r"up\.safetensors: no such file"):
        ltxv.load_models(files[0], upsampler=tmp_path / "up.safetensors")


def test_pickle_is_never_unpickled(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(3)}, p)  # a zip/pickle checkpoint under a safetensors name
    with pytest.raises(ltxv.LoadError, match="pickled/zip torch checkpoint"):
        ltxv.load_models(p)


@pytest.mark.parametrize(
    "content", [b"", b"<html>404 Not Found</html>", b"\x10\x00\x00\x00\x00\x00\x00\x00not json!!!!!!!!"]
)
def test_not_safetensors(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(ltxv.LoadError, match="not a safetensors file"):
        ltxv.load_models(p)


def test_truncated_file(files: tuple[Path, Path], tmp_path: Path) -> None:
    data = files[0].read_bytes()
    p = tmp_path / "cut.safetensors"
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ltxv.LoadError, match="truncated: tensor"):
        ltxv.load_models(p)


def test_upsampler_errors(files: tuple[Path, Path], tmp_path: Path) -> None:
    wrong = write_upsampler_file(
        tmp_path / "up32.safetensors", TINY_UPSAMPLER.__class__(in_channels=32, mid_channels=32)
    )
    with pytest.raises(ltxv.LoadError, match="upsampler has 32 latent channels, the VAE 16"):
        ltxv.load_models(files[0], upsampler=wrong)
    with pytest.raises(ltxv.LoadError, match="metadata has no 'config'"):
        ltxv.load_models(files[0], upsampler=_rewrite(files[1], tmp_path / "u.safetensors", _no_config))


def test_bad_dtype(files: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        ltxv.load_models(files[0], dtype=torch.int8)


def test_tiny_kit_is_deterministic(tmp_path: Path) -> None:
    a = write_single_file(tmp_path / "a.safetensors", TINY_2B, TINY_VAE, seed=5)
    b = write_single_file(tmp_path / "b.safetensors", TINY_2B, TINY_VAE, seed=5)
    assert a.read_bytes() == b.read_bytes()


def test_positioned_reads_equal_safetensors_for_every_dtype_and_shape(tmp_path: Path) -> None:
    """The reader (positioned reads into each tensor, no memory map) against safetensors' own loader."""
    from safetensors.torch import load_file, save_file

    from ltxv.weights.safetensors_file import iter_tensors, read_header

    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, 7, generator=g) * 10
    tensors = {
        f"t.{dt}".replace("torch.", ""): base.to(dt)
        for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.float8_e4m3fn, torch.int64)
    }
    tensors |= {"scalar": torch.tensor(0.25), "empty": torch.zeros(0, 4), "bool": base > 0, "u8": base.to(torch.uint8)}
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"k": "v"})
    header = read_header(path)
    got = dict(iter_tensors(header, {k: k for k in reversed(list(header.tensors))}))
    want = load_file(str(path))
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert torch.equal(got[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
    # Casting on the way (through the shared scratch buffer) equals casting afterwards.
    floats = [k for k, v in want.items() if v.is_floating_point() and v.dtype != torch.float8_e4m3fn]
    cast = dict(iter_tensors(header, {k: k for k in floats}, dict.fromkeys(floats, torch.bfloat16)))
    assert all(torch.equal(cast[k], want[k].to(torch.bfloat16)) and cast[k].dtype == torch.bfloat16 for k in floats)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lazy_vae_encoder_is_read_on_first_encode_and_equals_eager(files: tuple[Path, Path], dtype) -> None:
    from ltxv.quant.fp8 import module_bytes

    ckpt, _ = files
    eager = ltxv.load_models(ckpt, dtype=dtype).vae
    lazy = ltxv.load_models(ckpt, dtype=dtype, lazy_vae_encoder=True).vae
    assert all(p.is_meta and p.dtype == dtype for p in lazy.encoder.parameters())
    assert not any(p.is_meta for p in lazy.decoder.parameters())
    assert module_bytes(lazy) == module_bytes(eager)  # what the memory estimate counts
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.inference_mode():
        assert torch.equal(lazy.decode(z, 0.05), eager.decode(z, 0.05))  # decoding needs no encoder
        assert lazy.deferred_tensors is not None
        video = torch.rand(1, 3, 9, 64, 96, generator=torch.Generator().manual_seed(1)).to(dtype) * 2 - 1
        assert torch.equal(lazy.encode(video), eager.encode(video))
    assert lazy.deferred_tensors is None
    assert all(torch.equal(a, b) for a, b in zip(lazy.state_dict().values(), eager.state_dict().values()))
