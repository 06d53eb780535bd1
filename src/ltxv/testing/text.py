"""A tiny random T5 encoder and a tokenizer made offline, laid out like the hub's ``text_encoder/`` + ``tokenizer/``.

The tokenizer is a sentencepiece unigram model trained in-process on a fixed little corpus, so nothing is downloaded
and the same seed always gives the same files. ``tokenizer/`` holds both ``spiece.model`` (all the real PixArt folder
has) and ``tokenizer.json`` (what transformers 5 reads without needing protobuf to convert ``spiece.model``)."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch

# Words of the kind video prompts are made of; a few hundred are enough for a unigram model with whole-word pieces.
_WORDS = """
a an the and or of in on at to from with without into over under through across along behind between near far
above below around inside outside while as then slowly quickly gently suddenly softly steadily smoothly rapidly
red orange yellow green blue purple pink brown black white gray golden silver dark bright pale warm cold soft
fox cat dog horse bird eagle fish whale deer wolf bear rabbit owl butterfly bee snake lion tiger elephant monkey
woman man girl boy child people crowd dancer runner driver pilot chef artist musician soldier farmer old young
runs walks jumps flies swims drives rides dances sings falls rises turns spins climbs looks smiles waves holds
opens closes moves stands sits sleeps reads writes plays glows shines burns melts flows drifts floats crashes
snow rain fog mist wind storm cloud clouds sky sun moon star stars night day dawn dusk sunset sunrise light
shadow fire smoke water wave waves ocean sea river lake stream waterfall beach sand desert forest jungle tree
trees leaf leaves flower flowers grass field meadow garden mountain mountains hill valley cliff cave rock stone
city street road bridge tower building house window door room kitchen table chair bed car train boat plane
ship bicycle lamp candle mirror book cup glass bottle camera lens frame shot scene view angle close up wide
aerial tracking pan tilt zoom dolly handheld static cinematic film footage video clip detailed realistic
sharp blurry focus depth color colors texture surface reflection motion movement speed time moment sequence
first second third background foreground left right center top bottom edge corner side front back middle
small large tall short long wide narrow thin thick heavy light empty full quiet loud calm wild ancient modern
"""


def _train_sentencepiece(seed: int, extra_words: Sequence[str] = ()) -> bytes:
    import sentencepiece as spm

    words = _WORDS.split() + [w for w in extra_words if w not in _WORDS.split()]
    rng = random.Random(seed)
    corpus = []
    for _ in range(2000):
        sentence = [rng.choice(words) for _ in range(rng.randint(3, 14))]
        sentence[0] = sentence[0].capitalize()
        corpus.append(" ".join(w + rng.choice(("", "", "", ",")) for w in sentence) + rng.choice(".!?"))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=600,
        model_type="unigram",
        pad_id=0,  # T5's special ids
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        # No NFKC table: transformers can only carry it over from spiece.model with protobuf, so without one both
        # files tokenize alike.
        normalization_rule_name="identity",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    return model.getvalue()


def _write_tokenizer(folder: Path, seed: int, extra_words: Sequence[str] = ()) -> int:
    """Write ``spiece.model``, ``tokenizer.json`` and configs; return the vocabulary size."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = _train_sentencepiece(seed, extra_words)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(folder)
    (folder / "spiece.model").write_bytes(proto)
    # The real folder's map, without the 100 sentinel tokens (the tiny vocabulary has none).
    specials = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    return len(tokenizer)


def write_tiny_text_encoder(
    folder: str | Path, d_model: int = 32, seed: int = 0, extra_words: Sequence[str] = ()
) -> Path:
    """A random 2-layer T5 v1.1-style encoder (``d_model`` wide) and its tokenizer under ``folder``; returns ``folder``.
    ``extra_words`` join the tokenizer's training corpus (the demo model's caption words). The global torch RNG is
    left as it was."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    vocab_size = _write_tokenizer(folder / "tokenizer", seed, extra_words)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=max(1, d_model // 8),
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",  # as T5 v1.1 (the XXL encoder LTX-Video uses)
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
    )
    with torch.random.fork_rng(devices=[]):  # transformers initialises from the global RNG
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    model.save_pretrained(folder / "text_encoder")
    return folder
