"""Tulu chat rendering, label masks, truncation and prompt/answer encoding."""

from __future__ import annotations

import copy
import logging

import polars as pl
import pytest
from transformers import PreTrainedTokenizerFast

from inflow.data.batching import IGNORE_INDEX, Encoded
from inflow.data.pool import MESSAGES_DTYPE
from inflow.data.render import (chat_spans, encode_chat, encode_pool, encode_prompt, encode_prompt_answer,
                                encode_targets, render_chat, render_prompt, tokenize_spans)
from inflow.models.tokenizer import train_tokenizer
from tests.data.open_instruct import ROWS, TARGET_ROWS, less_prompt_answer, open_instruct_chat

CONVERSATION = [
    {"role": "system", "content": "  You are terse.\n"},
    {"role": "user", "content": "Add 2 and 3."},
    {"role": "assistant", "content": " The sum is 5. "},
    {"role": "user", "content": "And 4 and 4?"},
    {"role": "assistant", "content": "It is 8."},
]
EXPECTED_TEXT = ("<|system|>\nYou are terse.\n<|user|>\nAdd 2 and 3.\n<|assistant|>\nThe sum is 5.</s>\n"
                 "<|user|>\nAnd 4 and 4?\n<|assistant|>\nIt is 8.</s>\n")


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    texts = [render_chat(CONVERSATION, "</s>"), "The answer is: B", "Question: what is the sum of two numbers?"]
    return train_tokenizer(texts * 20, vocab_size=300)


def labeled_runs(encoded: Encoded) -> list[list[int]]:
    """Consecutive runs of labeled ids."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in encoded.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


def test_render_chat_exact_text() -> None:
    assert render_chat(CONVERSATION, "</s>") == EXPECTED_TEXT
    assert render_chat(CONVERSATION[1:3], "<eos>") == "<|user|>\nAdd 2 and 3.\n<|assistant|>\nThe sum is 5.<eos>\n"


def test_render_rejects_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'tool'"):
        render_chat([{"role": "tool", "content": "x"}], "</s>")


def test_labels_cover_assistant_content_eos_and_newline(tok: PreTrainedTokenizerFast) -> None:
    encoded = encode_chat(CONVERSATION, tok, max_seq_len=1000, example_id="c1")
    assert encoded is not None and encoded.example_id == "c1"
    # the text after a marker gets the demo tokenizer's prefix space, which decoding a whole row drops again
    assert [tok.decode(run) for run in labeled_runs(encoded)] == [" The sum is 5.</s>\n", " It is 8.</s>\n"]
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (IGNORE_INDEX, token)
    assert encoded.input_ids[0] == tok.bos_token_id and encoded.labels[0] == IGNORE_INDEX
    assert tok.decode(encoded.input_ids[1:]) == EXPECTED_TEXT


def test_label_newline_false_masks_only_the_newline_after_eos(tok: PreTrainedTokenizerFast) -> None:
    """LESS / open-instruct label the newline after each EOS; ``label_newline=False`` is the earlier rule."""
    with_newline = encode_chat(CONVERSATION, tok, max_seq_len=1000)
    without = encode_chat(CONVERSATION, tok, max_seq_len=1000, label_newline=False)
    assert with_newline is not None and without is not None
    assert without.input_ids == with_newline.input_ids
    assert [tok.decode(run) for run in labeled_runs(without)] == [" The sum is 5.</s>", " It is 8.</s>"]
    changed = [i for i, (a, b) in enumerate(zip(with_newline.labels, without.labels)) if a != b]
    assert len(changed) == 2 and with_newline.n_labels == without.n_labels + 2
    assert all(without.input_ids[i - 1] == tok.eos_token_id and tok.decode([without.input_ids[i]]) == "\n"
               for i in changed)


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_pool_encoding_equals_open_instruct(tok: PreTrainedTokenizerFast, index: int) -> None:
    """Ids and labels token by token as open-instruct's encode_with_messages_format (whole string at once)."""
    encoded = encode_chat(ROWS[index], tok, max_seq_len=10_000)
    assert encoded is not None
    ids, labels = open_instruct_chat(ROWS[index], tok)
    assert list(encoded.input_ids) == ids and list(encoded.labels) == labels
    assert ids[1:] == tok(render_chat(ROWS[index], tok.eos_token), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("index", range(len(ROWS)))
def test_segment_encoding_equals_whole_string_for_the_demo_tokenizer(tok: PreTrainedTokenizerFast,
                                                                     index: int) -> None:
    """The path for tokenizers without offsets gives the same ids for ours (markers end with the newline)."""
    spans = chat_spans(ROWS[index], tok.eos_token)
    assert tokenize_spans(spans, tok, whole=False) == tokenize_spans(spans, tok, whole=True)


def test_answer_word_has_the_tokens_of_the_span_it_copies(tok: PreTrainedTokenizerFast) -> None:
    """Extractive QA: the answer "sum" must start with the token that "sum" has in the prompt."""
    prompt = [{"role": "user", "content": "Question: what is the sum of two numbers?"}]
    encoded = encode_prompt_answer(prompt, "sum", tok, max_seq_len=1000)
    assert encoded is not None
    answer = [label for label in encoded.labels if label != IGNORE_INDEX]
    prompt_ids = list(encoded.input_ids[: len(encoded.input_ids) - len(answer)])
    assert any(prompt_ids[i:i + len(answer)] == answer for i in range(len(prompt_ids)))


def test_right_truncation_keeps_surviving_labels(tok: PreTrainedTokenizerFast) -> None:
    full = encode_chat(CONVERSATION, tok, max_seq_len=1000)
    assert full is not None
    first_label = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = encode_chat(CONVERSATION, tok, max_seq_len=first_label + 2)
    assert cut is not None and len(cut) == first_label + 2
    assert cut.input_ids == full.input_ids[: first_label + 2] and cut.labels == full.labels[: first_label + 2]
    assert encode_chat(CONVERSATION, tok, max_seq_len=first_label) is None


def test_no_bos_when_tokenizer_has_none(tok: PreTrainedTokenizerFast) -> None:
    no_bos = copy.deepcopy(tok)
    no_bos.bos_token = None
    with_bos = encode_chat(CONVERSATION, tok, 1000)
    without = encode_chat(CONVERSATION, no_bos, 1000)
    assert with_bos is not None and without is not None
    assert without.input_ids == with_bos.input_ids[1:] and without.labels == with_bos.labels[1:]


def test_prompt_answer_masks_prompt_and_has_no_eos(tok: PreTrainedTokenizerFast) -> None:
    prompt = [{"role": "user", "content": "Question: what is the sum? "},
              {"role": "assistant", "content": "The answer is:"}]
    encoded = encode_prompt_answer(prompt, " B", tok, max_seq_len=1000, example_id="t1")
    assert encoded is not None
    assert tok.eos_token_id not in encoded.input_ids
    assert [tok.decode(run) for run in labeled_runs(encoded)] == [" B"]
    n_answer = len(tok.encode(" B", add_special_tokens=False))
    assert encoded.labels[-n_answer:] == encoded.input_ids[-n_answer:]
    text = "<|user|>\nQuestion: what is the sum?\n<|assistant|>\nThe answer is: B"
    assert tok.decode(encoded.input_ids[1:]) == text
    assert render_prompt(prompt, tok.eos_token) + " B" == text
    prefix = encode_prompt(prompt, tok)
    assert list(encoded.input_ids[: len(prefix)]) == prefix
    assert all(label == IGNORE_INDEX for label in encoded.labels[: len(prefix)])


def test_prompt_without_prefix_and_with_earlier_turns(tok: PreTrainedTokenizerFast) -> None:
    prompt = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"},
              {"role": "user", "content": "And 4 and 4?"}]
    encoded = encode_prompt_answer(prompt, "8", tok, max_seq_len=1000)
    assert encoded is not None
    assert tok.decode(encoded.input_ids[1:]) == ("<|user|>\nAdd 2 and 3.\n<|assistant|>\n5</s>\n"
                                                 "<|user|>\nAnd 4 and 4?\n<|assistant|>\n8")
    assert [tok.decode(run) for run in labeled_runs(encoded)] == [" 8"]


@pytest.mark.parametrize(("prompt", "answer"), TARGET_ROWS)
def test_target_encoding_equals_less(tok: PreTrainedTokenizerFast, prompt: list, answer: str) -> None:
    """Ids and labels token by token as LESS's validation ``tokenize`` (query + completion at once)."""
    encoded = encode_prompt_answer(prompt, answer, tok, max_seq_len=10_000)
    assert encoded is not None
    assert (list(encoded.input_ids), list(encoded.labels)) == less_prompt_answer(prompt, answer, tok)


def test_prompt_answer_truncated_away_is_none(tok: PreTrainedTokenizerFast) -> None:
    prompt = [{"role": "user", "content": "Question: what is the sum?"}]
    n_prompt = len(encode_prompt(prompt, tok))
    assert encode_prompt_answer(prompt, " B", tok, max_seq_len=n_prompt) is None
    kept = encode_prompt_answer(prompt, " B", tok, max_seq_len=n_prompt + 1)
    assert kept is not None and kept.n_labels == 1


def test_encode_pool_drops_and_reports(tok: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture) -> None:
    long_prompt = [{"role": "user", "content": "Add 2 and 3. " * 20}, {"role": "assistant", "content": "5"}]
    df = pl.DataFrame({"example_id": ["short", "long"], "dataset": ["", ""],
                       "messages": pl.Series([CONVERSATION[1:3], long_prompt], dtype=MESSAGES_DTYPE)})
    with caplog.at_level(logging.WARNING, logger="inflow.data.render"):
        kept, dropped = encode_pool(df, tok, max_seq_len=40)
    assert [e.example_id for e in kept] == ["short"] and dropped == ["long"]
    assert "1 of 2 pool examples dropped" in caplog.text and "long" in caplog.text


def test_encode_targets(tok: PreTrainedTokenizerFast) -> None:
    df = pl.DataFrame({
        "example_id": ["a", "b"], "subtask": ["s", "s"],
        "prompt_messages": pl.Series([[{"role": "user", "content": "Question: x"}]] * 2, dtype=MESSAGES_DTYPE),
        "answer": [" B", "The answer is: " * 30],
    })
    n_prompt = len(encode_prompt([{"role": "user", "content": "Question: x"}], tok))
    kept, dropped = encode_targets(df, tok, max_seq_len=n_prompt + 3)
    assert [e.example_id for e in kept] == ["a", "b"] and dropped == []
    assert [len(e) for e in kept] == [len(encode_prompt_answer(df["prompt_messages"][0].to_list(), " B", tok, 1000)),
                                      n_prompt + 3]
    kept, dropped = encode_targets(df, tok, max_seq_len=n_prompt)
    assert kept == [] and dropped == ["a", "b"]
