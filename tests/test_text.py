"""The T5 wrapper against the reference's ``LTXVideoPipeline.encode_prompt`` on the offline tiny T5, its errors, and
the tiny text-encoder kit itself."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import torch
import transformers

import ltxv.weights.hub as hub
from ltxv.testing.text import write_tiny_text_encoder
from ltxv.text import t5
from ltxv.text.t5 import TextEncoder
from ltxv.weights.errors import LoadError

PROMPT = "  A red fox runs slowly through the snow, cinematic.  "
NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_text_encoder(tmp_path_factory.mktemp("t5"), d_model=32, seed=0)


def _reference_pipeline(folder: Path, dtype: torch.dtype = torch.float32) -> object:
    """The reference pipeline with only what ``encode_prompt`` touches, loaded as ``create_ltx_video_pipeline`` loads
    it: fp32 ``from_pretrained`` then a cast of the whole model (bf16 in the reference)."""
    ref = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    pipe = ref.LTXVideoPipeline.__new__(ref.LTXVideoPipeline)
    encoder = transformers.T5EncoderModel.from_pretrained(str(folder), subfolder="text_encoder")
    pipe.text_encoder = encoder.to(dtype).eval()
    pipe.tokenizer = transformers.T5Tokenizer.from_pretrained(str(folder), subfolder="tokenizer")
    pipe.transformer = None
    return pipe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encode_equals_reference_encode_prompt(t5_dir: Path, dtype: torch.dtype) -> None:
    pipe = _reference_pipeline(t5_dir, dtype)
    with torch.no_grad():
        pe, pm, ne, nm = pipe.encode_prompt(PROMPT, True, negative_prompt=NEGATIVE, device="cpu")
    ours = TextEncoder.from_pretrained(t5_dir, dtype=dtype)
    emb, mask = ours.encode([PROMPT])
    nemb, nmask = ours.encode([NEGATIVE])
    assert emb.shape == (1, 256, 32) and emb.dtype == dtype and mask.dtype == torch.int64
    assert torch.equal(mask, pm) and torch.equal(nmask, nm)
    assert torch.equal(emb, pe) and torch.equal(nemb, ne)
    # The mask covers the stripped prompt's tokens plus </s>, then padding; padded positions still get embeddings.
    n = len(ours.tokenizer(PROMPT.strip()).input_ids)
    assert mask[0, :n].all() and not mask[0, n:].any() and 5 < n < 30
    assert emb[0, n:].abs().sum() > 0
    assert not torch.equal(emb, nemb)


def test_batch_rows_equal_single_prompts_and_reference_batch(t5_dir: Path) -> None:
    pipe = _reference_pipeline(t5_dir)
    prompts = [PROMPT, "a cat", ""]
    with torch.no_grad():
        pe, pm, _, _ = pipe.encode_prompt(prompts, False, device="cpu")
    ours = TextEncoder.from_pretrained(t5_dir)
    emb, mask = ours.encode(prompts)
    assert torch.equal(emb, pe) and torch.equal(mask, pm)
    assert mask.sum(1).tolist()[1:] == [3, 1]  # "a cat" -> ▁a ▁cat </s>; "" -> </s> alone
    for i, p in enumerate(prompts):
        single, _ = ours.encode([p])
        torch.testing.assert_close(emb[i], single[0], rtol=1e-5, atol=1e-6)


def test_long_prompt_is_truncated_like_the_reference(t5_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    long = " ".join(["the red fox runs through the forest"] * 6)
    pipe = _reference_pipeline(t5_dir)
    with torch.no_grad():
        pe, pm, _, _ = pipe.encode_prompt(long, False, device="cpu", text_encoder_max_tokens=16)
    ours = TextEncoder.from_pretrained(t5_dir)
    with caplog.at_level(logging.WARNING, logger="ltxv.text.t5"):
        emb, mask = ours.encode([long], max_tokens=16)
    assert torch.equal(emb, pe) and torch.equal(mask, pm) and bool(mask.all())
    assert "prompt truncated to 16 tokens (27 dropped)" in caplog.text
    ids = ours.tokenizer([long], max_length=16, truncation=True, padding="max_length").input_ids[0]
    assert ids[-1] == 1  # truncation keeps </s> last


def test_prompt_type_errors(t5_dir: Path) -> None:
    encoder = TextEncoder.from_pretrained(t5_dir)
    with pytest.raises(TypeError, match="a prompt must be a string, got int"):
        encoder.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a prompt must be a string, got NoneType"):
        encoder.encode([None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="prompts must be a list of strings, got str"):
        encoder.encode("a bare string")  # type: ignore[arg-type]


def test_to_moves_the_model_and_keeps_the_wrapper(t5_dir: Path) -> None:
    encoder = TextEncoder.from_pretrained(t5_dir, dtype=torch.bfloat16)
    assert encoder.to("cpu") is encoder and encoder.device == torch.device("cpu") and encoder.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in encoder.model.parameters())  # ``wo`` too, as the reference casts
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_folder_errors(t5_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not a text-encoder folder \\(no 'text_encoder/' inside\\)"):
        TextEncoder.from_pretrained(tmp_path)
    shutil.copytree(t5_dir / "text_encoder", tmp_path / "text_encoder")
    with pytest.raises(LoadError, match="no 'tokenizer/' inside"):
        TextEncoder.from_pretrained(tmp_path)
    with pytest.raises(LoadError, match="not a hub repo id"):
        TextEncoder.from_pretrained(tmp_path / "missing")


def test_hub_id_without_network_is_a_prompt_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def offline(repo_id: str, **kwargs: object) -> str:
        calls.append(bool(kwargs.get("local_files_only")))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)  # the download itself fails
    start = time.monotonic()
    with pytest.raises(LoadError, match=r"PixArt-alpha/PixArt-XL-2-1024-MS.*could not be downloaded: Network"):
        TextEncoder.from_pretrained("PixArt-alpha/PixArt-XL-2-1024-MS")
    assert calls == [True, False]  # the cache first, then one download attempt
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)  # no route: no download attempt at all
    with pytest.raises(LoadError, match=r"PixArt-alpha/PixArt-XL-2-1024-MS.*could not be downloaded.*unreachable"):
        TextEncoder.from_pretrained("PixArt-alpha/PixArt-XL-2-1024-MS")
    assert calls == [True, False, True] and time.monotonic() - start < 5


def test_hub_id_from_the_cache_loads(t5_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, **kwargs: str(t5_dir))
    encoder = TextEncoder.from_pretrained("PixArt-alpha/PixArt-XL-2-1024-MS")
    assert encoder.encode(["a cat"])[0].shape == (1, 256, 32)


# --- the kit ------------------------------------------------------------------------------------------------------


def test_kit_loads_the_way_the_reference_loads_it(t5_dir: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    auto = transformers.AutoTokenizer.from_pretrained(t5_dir / "tokenizer")
    model = transformers.T5EncoderModel.from_pretrained(t5_dir / "text_encoder")
    cfg = model.config
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.is_gated_act) == (32, 2, 4, True)
    assert (auto.pad_token_id, auto.eos_token_id, auto.unk_token_id, len(auto)) == (0, 1, 2, cfg.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=str(t5_dir / "tokenizer" / "spiece.model"))
    for text in ("A red fox runs slowly through the snow, cinematic.", "Zürich at night 42", ""):
        assert auto(text).input_ids == [*sp.encode(text), 1]  # tokenizer.json == spiece.model, plus </s>
    words = auto.convert_ids_to_tokens(auto("A red fox runs slowly").input_ids)
    assert words == ["▁A", "▁red", "▁fox", "▁runs", "▁slowly", "</s>"]


def test_kit_is_deterministic_and_leaves_the_global_rng(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    a = write_tiny_text_encoder(tmp_path / "a", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = write_tiny_text_encoder(tmp_path / "b", seed=3)
    c = write_tiny_text_encoder(tmp_path / "c", seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"text_encoder/model.safetensors", "tokenizer/spiece.model"}
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    weights = Path("text_encoder/model.safetensors")
    assert (a / weights).read_bytes() != (c / weights).read_bytes()


def test_hub_layout_with_only_spiece_model(t5_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PixArt folder has no tokenizer.json: transformers 5 converts spiece.model, which needs protobuf."""
    shutil.copytree(t5_dir / "text_encoder", tmp_path / "text_encoder")
    shutil.copytree(t5_dir / "tokenizer", tmp_path / "tokenizer", ignore=shutil.ignore_patterns("tokenizer.json"))

    def no_protobuf(*args: object, **kwargs: object) -> None:
        raise ValueError("`tiktoken` is required to read a `tiktoken` file")  # what transformers 5 says without it

    with monkeypatch.context() as m:
        m.setattr(t5, "_has_protobuf", lambda: False)
        m.setattr(t5.T5Tokenizer, "from_pretrained", no_protobuf)
        with pytest.raises(
            LoadError, match=r"no tokenizer\.json; converting spiece\.model needs the 'protobuf' package"
        ):
            TextEncoder.from_pretrained(tmp_path)
    if not t5._has_protobuf():
        pytest.skip("protobuf is not installed")
    converted = TextEncoder.from_pretrained(tmp_path)
    kit = TextEncoder.from_pretrained(t5_dir)
    for text in (PROMPT, NEGATIVE, "Zürich at night 42"):
        assert converted.tokenizer(text).input_ids == kit.tokenizer(text).input_ids
