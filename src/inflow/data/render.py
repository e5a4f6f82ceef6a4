"""Chat rendering and label masks in the LESS / open-instruct (Tulu) format.

Each message renders as::

    system     "<|system|>\\n"    + content.strip() + "\\n"
    user       "<|user|>\\n"      + content.strip() + "\\n"
    assistant  "<|assistant|>\\n" + content.strip() + eos + "\\n"

Pool examples (``encode_chat``) are scored on every assistant message's content and its EOS token; all
other tokens carry ``IGNORE_INDEX``. Target-task rows (``encode_prompt_answer``) are scored on the answer
only, with no EOS, as LESS does for its validation sets. A target prompt may end with an assistant
message: that is a *response prefix* (LESS's "The answer is:", "A:", "Answer:"), rendered verbatim after
``"<|assistant|>\\n"`` and masked, with the answer following it directly.

Token ids are built by encoding each segment separately (``add_special_tokens=False``) and
concatenating: masked text runs are merged and encoded together, answer texts are encoded on their own,
EOS is appended as ``tokenizer.eos_token_id`` and BOS (when the tokenizer has one) is prepended. Label
boundaries are therefore exact whatever the tokenizer. With byte-level BPE tokenizers (ours, GPT-2,
Llama-3, Qwen2) segments start at pre-token boundaries (after a marker or a newline), so the ids equal
those of encoding the rendered text in one go (tested for ours). SentencePiece tokenizers that prepend
"▁" to every encoded string (Llama-2) give each answer segment a leading "▁" instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import polars as pl

from inflow.data.batching import IGNORE_INDEX, Encoded

if TYPE_CHECKING:  # typing only: importing transformers costs a second, and any tokenizer object works
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Message = Mapping[str, str]

# A piece of an example before tokenization: text or a single token id, and whether it is scored.
_Piece = tuple[str | int, bool]


def _marker(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return f"<|{role}|>\n"


def render_chat(messages: Sequence[Message], eos: str) -> str:
    """The full Tulu-format text of a conversation (each assistant turn ends with ``eos`` + newline)."""
    parts = []
    for message in messages:
        parts.append(_marker(message["role"]) + message["content"].strip())
        parts.append(eos + "\n" if message["role"] == "assistant" else "\n")
    return "".join(parts)


def _prompt_pieces(prompt_messages: Sequence[Message], eos_id: int) -> list[_Piece]:
    """Masked pieces of a target prompt up to where the answer starts (response prefix included)."""
    pieces: list[_Piece] = []
    body, prefix = list(prompt_messages), None
    if body and body[-1]["role"] == "assistant":
        body, prefix = body[:-1], body[-1]["content"]
    for message in body:
        pieces.append((_marker(message["role"]) + message["content"].strip(), False))
        if message["role"] == "assistant":
            pieces.append((eos_id, False))
        pieces.append(("\n", False))
    pieces.append((_marker("assistant") + (prefix or ""), False))
    return pieces


def render_prompt(prompt_messages: Sequence[Message], eos: str) -> str:
    """The text a model sees before a target answer: the prompt, ``"<|assistant|>\\n"``, any prefix."""
    pieces = _prompt_pieces(prompt_messages, eos_id=-1)
    return "".join(eos if isinstance(p, int) else p for p, _ in pieces)


def _chat_pieces(messages: Sequence[Message], eos_id: int) -> list[_Piece]:
    pieces: list[_Piece] = []
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "assistant":
            pieces += [(_marker("assistant"), False), (content, True), (eos_id, True), ("\n", False)]
        else:
            pieces.append((_marker(message["role"]) + content + "\n", False))
    return pieces


def _merge_masked(pieces: list[_Piece]) -> list[_Piece]:
    """Join consecutive masked text pieces so they are tokenized as one run, as in the full text."""
    merged: list[_Piece] = []
    for piece, labeled in pieces:
        if merged and not labeled and isinstance(piece, str):
            last, last_labeled = merged[-1]
            if not last_labeled and isinstance(last, str):
                merged[-1] = (last + piece, False)
                continue
        merged.append((piece, labeled))
    return merged


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set one (tokenizer.eos_token = ...) before encoding")
    return int(tokenizer.eos_token_id)


def _tokenize_pieces(pieces: list[_Piece], tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of ``pieces``, BOS first when the tokenizer has one; no truncation."""
    input_ids: list[int] = []
    labels: list[int] = []
    if tokenizer.bos_token_id is not None:
        input_ids.append(int(tokenizer.bos_token_id))
        labels.append(IGNORE_INDEX)
    for piece, labeled in _merge_masked(pieces):
        ids = [piece] if isinstance(piece, int) else tokenizer.encode(piece, add_special_tokens=False)
        input_ids += ids
        labels += ids if labeled else [IGNORE_INDEX] * len(ids)
    return input_ids, labels


def _encode_pieces(pieces: list[_Piece], tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                   example_id: str) -> Encoded | None:
    input_ids, labels = _tokenize_pieces(pieces, tokenizer)
    input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Encoded(tuple(input_ids), tuple(labels), example_id)


def encode_chat(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                example_id: str = "") -> Encoded | None:
    """Token ids and labels of a pool conversation, truncated from the right to ``max_seq_len`` tokens.

    Labels are the ids of each assistant message's (stripped) content and its EOS; ``IGNORE_INDEX``
    elsewhere. Returns ``None`` when truncation removed every labeled token (the caller reports it).
    """
    return _encode_pieces(_chat_pieces(messages, _eos_id(tokenizer)), tokenizer, max_seq_len, example_id)


def encode_prompt(prompt_messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids ``encode_prompt_answer`` puts before the answer (BOS included): what generation starts from."""
    return _tokenize_pieces(_prompt_pieces(prompt_messages, _eos_id(tokenizer)), tokenizer)[0]


def encode_prompt_answer(prompt_messages: Sequence[Message], answer: str, tokenizer: PreTrainedTokenizerBase,
                         max_seq_len: int, example_id: str = "") -> Encoded | None:
    """Token ids and labels of a target row: masked prompt, ``"<|assistant|>\\n"`` (+ prefix), labeled answer.

    The answer is encoded verbatim (not stripped: LESS's answers keep their leading space, e.g. ``" B"``)
    and is not followed by EOS. Right truncation to ``max_seq_len``; ``None`` if no answer token survives.
    """
    pieces = _prompt_pieces(prompt_messages, _eos_id(tokenizer)) + [(answer, True)]
    return _encode_pieces(pieces, tokenizer, max_seq_len, example_id)


def _report_dropped(dropped: list[str], total: int, what: str, max_seq_len: int) -> None:
    if dropped:
        log.warning("%d of %d %s dropped: every answer token lies beyond max_seq_len=%d (first: %s)",
                    len(dropped), total, what, max_seq_len, ", ".join(dropped[:5]))


def encode_pool(df: pl.DataFrame, tokenizer: PreTrainedTokenizerBase,
                max_seq_len: int) -> tuple[list[Encoded], list[str]]:
    """Encode every pool row (``example_id``, ``messages`` columns) with :func:`encode_chat`.

    Returns the kept encodings in row order and the example_ids dropped because truncation removed all
    their answer tokens (logged as a warning with the count and the first few ids).
    """
    kept: list[Encoded] = []
    dropped: list[str] = []
    for example_id, messages in zip(df["example_id"].to_list(), df["messages"].to_list(), strict=True):
        encoded = encode_chat(messages, tokenizer, max_seq_len, example_id)
        if encoded is None:
            dropped.append(example_id)
        else:
            kept.append(encoded)
    _report_dropped(dropped, df.height, "pool examples", max_seq_len)
    return kept, dropped


def encode_targets(df: pl.DataFrame, tokenizer: PreTrainedTokenizerBase,
                   max_seq_len: int) -> tuple[list[Encoded], list[str]]:
    """Encode every target row (``example_id``, ``prompt_messages``, ``answer``) with :func:`encode_prompt_answer`.

    Returns the kept encodings in row order and the example_ids dropped (logged as for the pool).
    """
    kept: list[Encoded] = []
    dropped: list[str] = []
    rows = zip(df["example_id"].to_list(), df["prompt_messages"].to_list(), df["answer"].to_list(), strict=True)
    for example_id, prompt_messages, answer in rows:
        encoded = encode_prompt_answer(prompt_messages, answer, tokenizer, max_seq_len, example_id)
        if encoded is None:
            dropped.append(example_id)
        else:
            kept.append(encoded)
    _report_dropped(dropped, df.height, "target rows", max_seq_len)
    return kept, dropped
