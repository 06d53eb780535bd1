"""The T5 text encoder (transformers' ``T5EncoderModel`` + tokenizer), as the reference uses it (study §2.6):
256 tokens, padded to the maximum length, truncated, special tokens added, last hidden state, padding kept and masked."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, T5EncoderModel

from ltxv.weights.errors import LoadError

MAX_TOKENS = 256


class TextEncoder:
    def __init__(self, model: T5EncoderModel, tokenizer: object) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> TextEncoder:
        """A local folder laid out like the hub repo ``PixArt-alpha/PixArt-XL-2-1024-MS``: ``text_encoder/`` and
        ``tokenizer/`` (``ltxv.weights.hub.resolve`` turns the hub id into such a folder)."""
        folder = Path(folder)
        for sub in ("text_encoder", "tokenizer"):
            if not (folder / sub).is_dir():
                raise LoadError(f"{folder}: not a text-encoder folder (no '{sub}/' inside)")
        model = T5EncoderModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype).to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TextEncoder:
        """Move the encoder (e.g. off the compute device once prompts are encoded)."""
        self.model.to(device)
        return self

    @torch.inference_mode()
    def encode(self, prompts: list[str], max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (embeddings (B, L, D) in the encoder's dtype, mask (B, L) int64), L = max_tokens."""
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"a prompt must be a string, got {type(p).__name__}")
        tokens = self.tokenizer(
            [p.strip() for p in prompts],
            padding="max_length",
            max_length=max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        return self.model(ids, attention_mask=mask)[0], mask
