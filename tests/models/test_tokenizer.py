"""The locally trained BPE tokenizer: special tokens, chat template, save/load and determinism."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from inflow.data.render import render_chat
from inflow.errors import InflowError
from inflow.models.tokenizer import CHAT_MARKERS, load_tokenizer, pad_token_id, save_tokenizer, train_tokenizer

TEXTS = ["The cat sat on the mat.", "Alice has 3 apples and buys 4 more; now she has 7.",
         render_chat([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}], "</s>")]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
    [{"role": "system", "content": " Be brief.\n"}, {"role": "user", "content": "  2+2?\n\n"},
     {"role": "assistant", "content": "4 "}, {"role": "user", "content": "and\nthen?"},
     {"role": "assistant", "content": "\tdone"}],
]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(TEXTS * 20, vocab_size=300)


def test_special_tokens(tok: PreTrainedTokenizerFast) -> None:
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", "<pad>")
    assert len({tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 4
    assert CHAT_MARKERS == ("<|system|>\n", "<|user|>\n", "<|assistant|>\n")  # newline included
    for marker in CHAT_MARKERS:
        ids = tok.encode(f"x{marker}y", add_special_tokens=False)
        assert tok.convert_tokens_to_ids(marker) in ids and tok.convert_ids_to_tokens(ids).count(marker) == 1
        assert marker in tok.all_special_tokens
    # skipping the marker line leaves the prefix space of the text after it
    assert tok.decode(tok.encode("<|user|>\nHi</s>", add_special_tokens=False), skip_special_tokens=True) == " Hi"
    assert tok.encode("Hi", add_special_tokens=True) == tok.encode("Hi", add_special_tokens=False)
    assert tok.model_max_length >= 1_000_000


def test_vocab_size_and_byte_coverage(tok: PreTrainedTokenizerFast) -> None:
    assert len(tok) == 300
    text = "naïve 東京 🙂 ~`|"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == " " + text  # the prefix space
    assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)
    assert tok.decode(tok.encode("\n" + text, add_special_tokens=False)) == "\n" + text


def test_prefix_space_like_llama2(tok: PreTrainedTokenizerFast) -> None:
    """A text starting with a word gets one leading space; one starting with whitespace is left alone."""
    assert tok.encode("word", add_special_tokens=False) == tok.encode(" word", add_special_tokens=False)
    assert tok.encode("\nword", add_special_tokens=False) != tok.encode(" \nword", add_special_tokens=False)
    assert tok.decode(tok.encode("a\n \nb", add_special_tokens=False)) == " a\n \nb"  # only the start
    ids = tok.encode("<|assistant|>\nword", add_special_tokens=False)
    # the text after a marker line is a text of its own: it starts with the prefix space, as "word" alone does
    assert ids[1:] == tok.encode("word", add_special_tokens=False)
    assert tok.decode(ids) == "<|assistant|>\nword"  # the decoder drops the space after a marker again
    assert tok.decode(tok.encode("<|user|>\n\nx", add_special_tokens=False)) == "<|user|>\n\nx"


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_template_matches_render_chat(tok: PreTrainedTokenizerFast, index: int) -> None:
    messages = CONVERSATIONS[index]
    assert tok.apply_chat_template(messages, tokenize=False) == render_chat(messages, tok.eos_token)
    with_prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert with_prompt == render_chat(messages[:-1], tok.eos_token) + "<|assistant|>\n"


def test_chat_template_rejects_unknown_role(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(Exception, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_save_load_round_trip(tok: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    for text in TEXTS + [render_chat(c, "</s>") for c in CONVERSATIONS]:
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                               tok.pad_token_id)
    assert loaded.apply_chat_template(CONVERSATIONS[1], tokenize=False) == render_chat(CONVERSATIONS[1], "</s>")


def test_training_is_deterministic(tok: PreTrainedTokenizerFast) -> None:
    again = train_tokenizer(TEXTS * 20, vocab_size=300)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    other = train_tokenizer(["completely different words here"] * 20, vocab_size=300)
    assert other.backend_tokenizer.to_str() != tok.backend_tokenizer.to_str()


def test_load_errors(tok: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InflowError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path / "empty")
    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    save_tokenizer(no_eos, tmp_path / "no_eos")
    with pytest.raises(InflowError, match="has no eos token"):
        load_tokenizer(tmp_path / "no_eos")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_saved_with_a_model_it_loads_as_saved(tok: PreTrainedTokenizerFast, tmp_path: Path, family: str) -> None:
    """transformers 5's AutoTokenizer would rebuild a qwen2 model dir's tokenizer as Qwen2Tokenizer (another
    normaliser and pre-tokenizer around our vocabulary); ours must load exactly as it was saved, at every hop."""
    from inflow.config import ModelConfig
    from inflow.models.factory import build_tiny_model, save_model

    cfg = ModelConfig(family=family, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    first = save_model(build_tiny_model(cfg, tok, max_positions=32), tok, tmp_path / "base")
    second = save_tokenizer(load_tokenizer(first), tmp_path / "finetuned")  # what the fine-tune step does
    text = "lamps and 1234 Bram\nnaïve"
    for path in (first, second):
        loaded = load_tokenizer(path)
        assert loaded.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)


def test_pad_token_id_falls_back_to_eos(tok: PreTrainedTokenizerFast) -> None:
    assert pad_token_id(tok) == tok.pad_token_id
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None and pad_token_id(no_pad) == tok.eos_token_id
    no_pad.eos_token = None
    with pytest.raises(InflowError, match="neither a pad nor an eos token"):
        pad_token_id(no_pad)
