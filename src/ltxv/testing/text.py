"""A tiny random T5 encoder and a tokenizer made offline, laid out like the hub's ``text_encoder/`` + ``tokenizer/``.

The tokenizer is a sentencepiece unigram model trained in-process on a fixed little corpus, so nothing is downloaded
and the same seed always gives the same files."""

from __future__ import annotations

import io
import random
from pathlib import Path

import torch

_WORDS = (
    "a the red fox cat dog runs walks through snow forest city street river mountain sky sun moon night day light "
    "dark camera slowly quickly close up wide shot woman man child bird flies water waves ocean beach car drives rain "
    "clouds fire smoke green blue yellow white black old young small large tree flower grass field house window door"
).split()


def _tokenizer(seed: int) -> object:
    import sentencepiece as spm
    from transformers import T5Tokenizer

    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        vocab_size=64,
        model_type="unigram",
        pad_id=0,  # T5's special ids
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        hard_vocab_limit=False,
        seed_sentencepiece_size=1000,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def write_tiny_text_encoder(folder: str | Path, d_model: int = 32, seed: int = 0) -> Path:
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    tok = _tokenizer(seed)
    tok.save_pretrained(folder / "tokenizer")
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=max(1, d_model // 8),
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # as T5 v1.1 (the XXL encoder LTX-Video uses)
        is_encoder_decoder=False,
        use_cache=False,
    )
    # transformers initialises from the global RNG; restore it afterwards so callers are not affected.
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = T5EncoderModel(cfg)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder / "text_encoder")
    return folder
