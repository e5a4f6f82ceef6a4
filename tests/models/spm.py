"""A Llama-2-style tokenizer trained locally: SentencePiece-shaped BPE with byte fallback and no pad token.

What a Llama-2 checkpoint's tokenizer is under transformers 5: ``LlamaTokenizer`` (the fast one, built on the
``tokenizers`` library) around a BPE vocabulary with ``<unk>``, ``<s>``, ``</s>`` at ids 0-2 and the byte
pieces ``<0x00>``..``<0xFF>`` at 3-258 (byte fallback: ``"\\n"`` is ``<0x0A>``, it has no piece of its own),
a ``Metaspace`` pre-tokenizer that writes spaces as ``"▁"`` and prepends one ``"▁"`` to the start of the
input (not after a special token), BOS added by ``add_special_tokens``, and no pad token. Tulu's chat
markers (``<|user|>`` ...) are plain text, as in the Llama-2 tokenizer LESS trained with.

The merges are learned here with the ``tokenizers`` BPE trainer on ``"▁"``-prefixed words (SentencePiece
pieces never cross a space or a newline); ``transformers.LlamaTokenizer`` then builds the Llama pipeline
around them, exactly as ``AutoTokenizer.from_pretrained`` does for a Llama-2 checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaTokenizer

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))


def _learn_merges(texts: Iterable[str], vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Pieces (in learned order) and merges of a BPE trained on ``"▁"``-prefixed words, newlines apart."""
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.pre_tokenizer = pre_tokenizers.Split(Regex("▁?[^▁\n]+|\n|▁"), behavior="isolated")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[UNK, BOS, EOS],
                                  show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    model = json.loads(core.to_str())["model"]
    pieces = [piece for piece, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return pieces, merges


def train_llama2_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> LlamaTokenizer:
    """A Llama-2-style tokenizer (see the module docstring) whose merges are learned from ``texts``."""
    pieces, merges = _learn_merges(texts, vocab_size)
    vocab = {UNK: 0, BOS: 1, EOS: 2, **{piece: 3 + b for b, piece in enumerate(BYTE_PIECES)}}
    for piece in pieces:
        if piece not in vocab and "\n" not in piece:  # newlines go through byte fallback, as in Llama-2
            vocab[piece] = len(vocab)
    merges = [m for m in merges if "\n" not in m[0] + m[1]]
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
