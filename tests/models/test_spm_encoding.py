"""A Llama-2-style SentencePiece tokenizer (byte fallback, "▁", no pad token) through inflow's encoders.

The tokenizer is trained here (``tests/models/spm.py``), saved, and loaded back with
``AutoTokenizer.from_pretrained`` as a user's Llama-2 checkpoint would be. Pool and target encodings must equal
open-instruct's / LESS's whole-string encodings token by token. The segment-wise path (kept for tokenizers
without offsets) runs too, and differs in a measured, documented way: every answer segment starts with "▁".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from inflow.data.batching import IGNORE_INDEX, collate
from inflow.data.render import (chat_spans, encode_chat, encode_prompt, encode_prompt_answer, render_chat,
                                tokenize_spans)
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from tests.data.open_instruct import ROWS, TARGET_ROWS, less_prompt_answer, open_instruct_chat
from tests.models.spm import train_llama2_tokenizer

CORPUS = [render_chat(row, "</s>") for row in ROWS] + ["The cat sat on the mat. Question: what is the sum?"]


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    path = tmp_path_factory.mktemp("llama2") / "tokenizer"
    train_llama2_tokenizer(CORPUS * 10, vocab_size=400).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def test_it_is_a_llama2_style_tokenizer(spm: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    assert type(spm).__name__ == "LlamaTokenizer" and spm.is_fast
    assert spm.pad_token is None and (spm.bos_token, spm.eos_token, spm.unk_token) == ("<s>", "</s>", "<unk>")
    assert spm.convert_ids_to_tokens(spm("The sum")["input_ids"]) == ["<s>", "▁The", "▁sum"]
    assert spm.convert_ids_to_tokens(spm.encode("The\nThe", add_special_tokens=False)) == ["▁The", "<0x0A>", "The"]
    assert spm.unk_token_id not in spm.encode("naïve 東京 🙂", add_special_tokens=False)  # byte fallback
    assert spm.decode(spm.encode(CORPUS[0], add_special_tokens=False)) == CORPUS[0]
    spm.save_pretrained(tmp_path / "again")
    for loaded in (AutoTokenizer.from_pretrained(tmp_path / "again"), load_tokenizer(tmp_path / "again")):
        assert loaded.backend_tokenizer.to_str() == spm.backend_tokenizer.to_str()


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_pool_encoding_equals_open_instruct(spm: PreTrainedTokenizerBase, index: int) -> None:
    encoded = encode_chat(ROWS[index], spm, max_seq_len=10_000)
    assert encoded is not None
    assert (list(encoded.input_ids), list(encoded.labels)) == open_instruct_chat(ROWS[index], spm)


@pytest.mark.parametrize(("prompt", "answer"), TARGET_ROWS)
def test_target_encoding_equals_less(spm: PreTrainedTokenizerBase, prompt: list, answer: str) -> None:
    encoded = encode_prompt_answer(prompt, answer, spm, max_seq_len=10_000)
    assert encoded is not None
    assert (list(encoded.input_ids), list(encoded.labels)) == less_prompt_answer(prompt, answer, spm)
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    assert list(encoded.input_ids[:first]) == encode_prompt(prompt, spm)  # generation starts from the prompt


def _answer_runs(spm: PreTrainedTokenizerBase, labels: list[int]) -> list[list[str]]:
    runs: list[list[str]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(spm.convert_ids_to_tokens(label))
        previous = label
    return runs


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_segment_encoding_runs_and_gives_each_answer_a_leading_metaspace(spm: PreTrainedTokenizerBase,
                                                                         index: int) -> None:
    """Measured: encoded on its own, each answer starts with "▁"; in the whole string (after "\\n") it does not.

    The rest of the answer, its EOS and the newline are the same tokens. This is the difference
    ``inflow.data.render`` removes by tokenizing the whole string (documented in docs/architecture.md).
    """
    spans = chat_spans(ROWS[index], spm.eos_token)
    whole = _answer_runs(spm, tokenize_spans(spans, spm, whole=True)[1])
    segments = _answer_runs(spm, tokenize_spans(spans, spm, whole=False)[1])
    assert len(whole) == len(segments) >= 1
    for w, s in zip(whole, segments, strict=True):
        assert not w[0].startswith("▁") and s[0].startswith("▁")
        assert "".join(s).removeprefix("▁") == "".join(w) and s[-2:] == w[-2:] == ["</s>", "<0x0A>"]


def test_pad_less_batches(spm: PreTrainedTokenizerBase) -> None:
    encoded = [encode_chat(row, spm, max_seq_len=10_000) for row in ROWS]
    assert all(e is not None for e in encoded)
    batch = collate(encoded, pad_token_id(spm))  # type: ignore[arg-type]
    shortest = min(range(len(encoded)), key=lambda i: len(encoded[i]))  # type: ignore[arg-type]
    n = len(encoded[shortest])  # type: ignore[arg-type]
    assert batch["input_ids"][shortest, n:].eq(spm.eos_token_id).all()
    assert batch["labels"][shortest, n:].eq(IGNORE_INDEX).all()
