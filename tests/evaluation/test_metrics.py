"""Evaluation metrics: pad-less tokenizers, batch-size invariance, the generation budget, exact match."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from inflow.data.render import encode_targets
from inflow.data.target_task import prefix_message, target_frame, user_message
from inflow.evaluation import AUTO_MARGIN, answer_lengths, evaluate_split, generate_answers, generation_budget
from inflow.evaluation import metrics as metrics_module
from inflow.evaluation.generation import left_pad
from inflow.evaluation.metrics import _prompt_ids
from inflow.models.tokenizer import train_tokenizer

TEXTS = ["What is two plus two? The answer is four.", "Name the capital of France. Paris is the capital.",
         "Sort the words: pear apple fig. apple fig pear", "Reverse the list 1 2 3. 3 2 1"]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(TEXTS * 20, vocab_size=320)


@pytest.fixture(scope="module")
def padless(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same tokenizer without a pad token, as Llama's tokenizers come."""
    out = copy.deepcopy(tok)
    out.pad_token = None
    assert out.pad_token_id is None and out.eos_token_id is not None
    return out


@pytest.fixture(scope="module")
def model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      initializer_range=0.5)  # large weights: generations depend on the prompt, not just repeat it
    return LlamaForCausalLM(cfg).double().eval()  # float64: batch-size invariance holds to 1e-12


def _row(subtask: str, prompt: str, answer: str, prefix: str | None = None) -> dict:
    messages = [user_message(prompt)] + ([prefix_message(prefix)] if prefix else [])
    return {"example_id": f"{subtask}-{prompt}-{answer}", "subtask": subtask, "prompt_messages": messages,
            "answer": answer}


# Prompts of different lengths, so left padding matters; a repeated question (legitimate in a test set).
SPLIT = target_frame([
    _row("arith", "What is two plus two?", " four", "The answer is:"),
    _row("qa", "Name the capital of France, the country whose capital is asked for here.", "Paris"),
    _row("arith", "What is two plus two?", " four", "The answer is:") | {"example_id": "repeat"},
    _row("sort", "Sort the words: pear apple fig.", "apple fig pear"),
    _row("sort", "Reverse the list 1 2 3.", "3 2 1"),
])


def test_padless_tokenizer_gives_the_same_metrics(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast,
                                                   padless: PreTrainedTokenizerFast) -> None:
    with_pad = evaluate_split(model, tok, SPLIT, 128, 3, 0)
    without = evaluate_split(model, padless, SPLIT, 128, 3, 0)  # pads with EOS, masked
    assert without["loss"] == pytest.approx(with_pad["loss"], abs=1e-12)
    for name, metrics in with_pad["subtasks"].items():
        assert without["subtasks"][name] == pytest.approx(metrics, abs=1e-12)
    assert without["n"] == 5
    assert without["examples"] == with_pad["examples"]
    assert set(without["subtasks"]) == {"arith", "qa", "sort"} and without["subtasks"]["arith"]["n"] == 2


def test_losses_and_generations_do_not_depend_on_batch_size(model: LlamaForCausalLM,
                                                            padless: PreTrainedTokenizerFast) -> None:
    one = evaluate_split(model, padless, SPLIT, 128, 1, 6)
    many = evaluate_split(model, padless, SPLIT, 128, 4, 6)
    assert many["loss"] == pytest.approx(one["loss"], abs=1e-12)
    prompts = [_prompt_ids(e) for e in encode_targets(SPLIT, padless, 128)[0]]
    alone = generate_answers(model, padless, prompts, 1, 6)
    assert generate_answers(model, padless, prompts, 5, 6) == alone
    assert alone[0] == alone[2]  # the repeated question, padded differently in its batch
    assert len(set(alone)) == 4 and all(alone)  # the comparison is not vacuous


def test_left_pad_aligns_prompts_to_the_right() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_auto_budget_is_the_longest_answer_plus_margin(tok: PreTrainedTokenizerFast) -> None:
    lengths = answer_lengths(tok, SPLIT["answer"].to_list())
    assert lengths == [len(tok.encode(a, add_special_tokens=False)) for a in SPLIT["answer"]]
    assert generation_budget(lengths, 0) == max(lengths) + AUTO_MARGIN
    assert generation_budget(lengths, 50) == 50


def test_short_budget_warns_with_the_count(tok: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture) -> None:
    lengths = [1, 3, 5, 5]
    with caplog.at_level(logging.WARNING, logger="inflow.evaluation.generation"):
        assert generation_budget(lengths, 4, "gsm") == 4
    assert "gsm: 2 of 4 test answers are longer than evaluate.max_new_tokens=4 tokens (the longest has 5)" in (
        caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inflow.evaluation.generation"):
        generation_budget(lengths, 5)
    assert not caplog.records


def test_split_metrics_report_the_budget(model: LlamaForCausalLM, padless: PreTrainedTokenizerFast) -> None:
    lengths = answer_lengths(padless, SPLIT["answer"].to_list())
    auto = evaluate_split(model, padless, SPLIT, 128, 8, 0)
    assert auto["max_new_tokens"] == max(lengths) + AUTO_MARGIN and auto["answers_too_long"] == 0
    short = evaluate_split(model, padless, SPLIT, 128, 8, 1)
    assert short["max_new_tokens"] == 1 and short["answers_too_long"] == sum(n > 1 for n in lengths)


def test_exact_match_normalises_whitespace(model: LlamaForCausalLM, padless: PreTrainedTokenizerFast,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    answers = SPLIT["answer"].to_list()
    fake = [f"  {a}\n" for a in answers[:-1]] + ["wrong"]
    monkeypatch.setattr(metrics_module, "generate_answers", lambda *args, **kwargs: fake)
    result = evaluate_split(model, padless, SPLIT, 128, 8, 0)
    assert result["exact_match"] == pytest.approx(4 / 5)
    assert result["subtasks"]["sort"]["exact_match"] == pytest.approx(0.5)


def test_empty_split_is_refused(model: LlamaForCausalLM, padless: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="the test split of gsm has no rows"):
        evaluate_split(model, padless, SPLIT.head(0), 128, 8, 0, task="gsm")
