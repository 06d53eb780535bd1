"""The T5 text encoder (transformers' ``T5EncoderModel`` + ``T5Tokenizer``), used as the reference's ``encode_prompt``
uses it (study §2.6): the prompt ``.strip()``-ed, special tokens added, padded to ``max_tokens`` and truncated; the
output is the last hidden state with the padding kept, and the attention mask says which tokens are real."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from ltxv.weights.errors import LoadError
from ltxv.weights.hub import resolve
from ltxv.weights.safetensors_file import SafetensorsHeader, read_header
from ltxv.weights.sniff import describe_file

log = logging.getLogger(__name__)

MAX_TOKENS = 256


class TextEncoder:
    def __init__(self, model: T5EncoderModel, tokenizer: T5Tokenizer) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> TextEncoder:
        """A local folder laid out like the hub repo ``PixArt-alpha/PixArt-XL-2-1024-MS`` (``text_encoder/`` and
        ``tokenizer/``), or such a hub repo id: taken from the Hugging Face cache, else downloaded; with no network,
        a prompt :class:`LoadError` naming the id (``ltxv.weights.hub.resolve``)."""
        folder = resolve(name_or_path, "text_encoder")
        check_text_encoder(folder)
        try:  # safetensors only: transformers would otherwise unpickle a pytorch_model.bin
            model = T5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, use_safetensors=True)
        except (OSError, ValueError) as e:
            raise LoadError(f"{folder / 'text_encoder'}: cannot load the T5 encoder: {e}") from e
        # The reference loads in fp32 and then casts the whole model; an explicit cast also covers transformers
        # versions that keep T5's ``wo`` layers in fp32 when asked for a half dtype.
        model = model.to(device=device, dtype=dtype)
        return cls(model, _load_tokenizer(folder / "tokenizer"))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str) -> TextEncoder:
        """Move the encoder (e.g. off the compute device once prompts are encoded)."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str], max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (embeddings (B, L, D) in the encoder's dtype, mask (B, L) int64, 1 for real tokens), on the
        encoder's device; L = ``max_tokens``."""
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"a prompt must be a string, got {type(p).__name__}")
        texts = [p.strip() for p in prompts]
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        self._warn_if_truncated(texts, max_tokens)
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        return self.model(ids, attention_mask=mask)[0], mask  # (B, L, D), (B, L)

    def _warn_if_truncated(self, texts: list[str], max_tokens: int) -> None:
        # verbose=False: the tokenizer's own "longer than the maximum sequence length" warning is about running the
        # untruncated ids through the model, which never happens here.
        for text, ids in zip(texts, self.tokenizer(texts, add_special_tokens=True, verbose=False).input_ids):
            if len(ids) > max_tokens:
                log.warning(
                    "prompt truncated to %d tokens (%d dropped): %.60s...", max_tokens, len(ids) - max_tokens, text
                )


def _t5_config(folder: Path) -> T5Config:
    path = folder / "text_encoder" / "config.json"
    if not path.is_file():
        raise LoadError(f"{path.parent}: no config.json, so not a transformers T5 encoder folder")
    try:
        raw = json.loads(path.read_text())
        kind = raw.get("model_type", "t5")
        config = T5Config.from_dict(raw)
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise LoadError(f"{path}: not a readable T5 config ({describe_file(path) or e})") from None
    if kind != "t5":
        raise LoadError(f"{path}: a {kind!r} config, not a T5 encoder's")
    return config


def _weight_headers(folder: Path) -> list[SafetensorsHeader]:
    """The headers of ``text_encoder/``'s safetensors weights (one file or the shards an index names)."""
    sub = folder / "text_encoder"
    index = sub / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LoadError(f"{index}: not a readable safetensors index ({e})") from None
        return [read_header(sub / name) for name in shards]
    if (sub / "model.safetensors").exists():
        return [read_header(sub / "model.safetensors")]
    others = sorted(p.name for p in sub.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))
    if others:
        what = describe_file(sub / others[0]) or "not safetensors"
        raise LoadError(
            f"{sub}: holds only {', '.join(others)}, which is {what}; ltxv loads safetensors only and never unpickles "
            "(convert it: transformers' save_pretrained(..., safe_serialization=True))"
        )
    raise LoadError(f"{sub}: no model.safetensors (or model.safetensors.index.json) inside")


def check_text_encoder(folder: str | Path) -> T5Config:
    """Check a text-encoder folder from its files' headers, before any weight is read: ``text_encoder/`` with a T5
    config and safetensors weights whose tensors are the encoder's (names and shapes), ``tokenizer/`` with a
    tokenizer file. Returns the T5 config. Raises :class:`LoadError` naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a text-encoder folder ({describe_file(folder) or 'not a folder'})")
    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise LoadError(f"{folder}: not a text-encoder folder (no '{sub}/' inside)")
    config = _t5_config(folder)
    given = {k: v.shape for h in _weight_headers(folder) for k, v in h.tensors.items()}
    model = meta_text_encoder(config, torch.float32)
    tied = dict(getattr(model, "_tied_weights_keys", None) or {})
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in given and tied.get(k) not in given)
    wrong = sorted(
        f"{k} is {list(given[k])}, expected {list(s)}" for k, s in expected.items() if k in given and given[k] != s
    )
    if missing or wrong:
        problem = (
            f"missing {len(missing)} tensor(s): {', '.join(missing[:3])}"
            if missing
            else f"wrong shapes: {', '.join(wrong[:3])}"
        )
        raise LoadError(f"{folder / 'text_encoder'}: the weights do not match its config.json ({problem})")
    tok = folder / "tokenizer"
    if not any((tok / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise LoadError(f"{tok}: no tokenizer.json or spiece.model inside")
    return config


def meta_text_encoder(config: T5Config, dtype: torch.dtype) -> T5EncoderModel:
    """The T5 encoder of ``config`` on the meta device in ``dtype``: its sizes, no weights."""
    with torch.device("meta"):
        return T5EncoderModel(config).to(dtype)


def _load_tokenizer(folder: Path) -> T5Tokenizer:
    # The class the reference names (in transformers 5 the tokenizers-backed one).
    try:
        return T5Tokenizer.from_pretrained(folder)
    except (OSError, ValueError, ImportError) as e:
        hint = ""
        if not (folder / "tokenizer.json").is_file() and not _has_protobuf():
            # The hub's PixArt folder has only spiece.model; transformers converts it with protobuf.
            hint = " (it has no tokenizer.json; converting spiece.model needs the 'protobuf' package)"
        raise LoadError(f"{folder}: cannot load the T5 tokenizer{hint}: {e}") from e


def _has_protobuf() -> bool:
    try:
        return importlib.util.find_spec("google.protobuf") is not None
    except (ModuleNotFoundError, ValueError):  # no "google" namespace at all, or a stubbed-out module
        return False
