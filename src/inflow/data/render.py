"""Chat rendering and label masks in the LESS / open-instruct (Tulu) format.

Each message renders as::

    system     "<|system|>\\n"    + content.strip() + "\\n"
    user       "<|user|>\\n"      + content.strip() + "\\n"
    assistant  "<|assistant|>\\n" + content.strip() + eos + "\\n"

Pool examples (``encode_chat``) are scored on every assistant message's content, its EOS token and, with
``label_newline=True`` (``data.label_newline``, the default), the newline after that EOS: open-instruct's
``encode_with_messages_format``, which LESS uses, masks only each non-assistant message and the
``"<|assistant|>\\n"`` marker that follows it, so that newline carries loss. ``label_newline=False`` masks it
(this project's earlier rule: 3,405 instead of 3,725 labelled tokens on 320 benchmark rows). Target-task
rows (``encode_prompt_answer``) are scored on the answer only, with no EOS, as LESS does for its validation
sets. A target prompt may end with an assistant message: that is a *response prefix* (LESS's "The answer
is:", "A:", "Answer:"), rendered verbatim after ``"<|assistant|>\\n"`` and masked, with the answer following
it directly.

**Tokenization.** An example is a list of text spans, each labelled or masked. With a fast tokenizer (every
tokenizer ``AutoTokenizer`` loads from a ``tokenizer.json``) the whole rendered string is tokenized at once
(``add_special_tokens=False``) and a token is labelled when its character span (``return_offsets_mapping``)
overlaps a labelled span: the ids are exactly those of the rendered text, and the labels those of
open-instruct's prefix-length rule (for pool rows) and of LESS's ``query + completion`` rule (for target
rows). Tests check ids and labels token by token against an open-instruct reference for our byte-level BPE
and for a Llama-2-style SentencePiece tokenizer. A slow (Python) tokenizer has no offsets: runs of equally
labelled spans are then encoded one by one and concatenated, which gives exact label boundaries but not
always the whole string's ids. BOS is prepended (as an id) whenever the tokenizer has one, for every
tokenizer alike (open-instruct relies on the tokenizer adding it; Llama-2's does, ours does not).

Segment-wise encoding (this module before it switched) differs from the whole string for tokenizers that
give every encoded text a prefix space: with a Llama-2-style SentencePiece tokenizer each answer segment
starts with ``"▁"`` (``"▁The"``), where the whole string, after the marker's ``<0x0A>``, has none
(``"The"``): on 320 benchmark pool rows every row's ids and every answer's first token differed, and 3,542
instead of 3,587 tokens were labelled (``tests/models/test_spm_encoding.py``, ``docs/architecture.md``). For
the demo tokenizer both paths agree: its marker tokens end with the newline, so the text after a marker is
a text of its own in either (:mod:`inflow.models.tokenizer`).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate, groupby
from typing import TYPE_CHECKING

import polars as pl

from inflow.data.batching import IGNORE_INDEX, Encoded

if TYPE_CHECKING:  # typing only: importing transformers costs a second, and any tokenizer object works
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Message = Mapping[str, str]

# A piece of an example's rendered text, and whether its tokens are scored.
Span = tuple[str, bool]


def _marker(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return f"<|{role}|>\n"


def chat_spans(messages: Sequence[Message], eos: str, label_newline: bool = True) -> list[Span]:
    """The rendered conversation as spans: assistant content + ``eos`` (+ the newline) labelled, the rest not."""
    spans: list[Span] = []
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "assistant":
            spans += [(_marker("assistant"), False), (content + eos, True), ("\n", label_newline)]
        else:
            spans.append((_marker(message["role"]) + content + "\n", False))
    return spans


def render_chat(messages: Sequence[Message], eos: str) -> str:
    """The full Tulu-format text of a conversation (each assistant turn ends with ``eos`` + newline)."""
    return "".join(text for text, _ in chat_spans(messages, eos))


def render_prompt(prompt_messages: Sequence[Message], eos: str) -> str:
    """The text a model sees before a target answer: the prompt, ``"<|assistant|>\\n"``, any prefix."""
    body, prefix = list(prompt_messages), ""
    if body and body[-1]["role"] == "assistant":
        body, prefix = body[:-1], body[-1]["content"]
    return render_chat(body, eos) + _marker("assistant") + prefix


def _eos(tokenizer: PreTrainedTokenizerBase) -> str:
    if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set one (tokenizer.eos_token = ...) before encoding")
    return str(tokenizer.eos_token)


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]


def _tokenize_whole(spans: Sequence[Span], tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[bool]]:
    """Ids of the concatenated text, each flagged when its characters overlap a labelled span.

    A token of zero width (some tokenizers trim whitespace out of offsets) takes the flag of the character
    just before its position.
    """
    text = "".join(t for t, _ in spans)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    bounds = list(accumulate((len(t) for t, _ in spans), initial=0))  # span i covers [bounds[i], bounds[i+1])
    flags = []
    for start, end in encoding["offset_mapping"]:
        if end <= start:
            start, end = max(start - 1, 0), max(start, 1)
        i = max(bisect_right(bounds, start) - 1, 0)
        hit = False
        while i < len(spans) and bounds[i] < end and not hit:
            hit = spans[i][1] and bounds[i + 1] > start
            i += 1
        flags.append(hit)
    return list(encoding["input_ids"]), flags


def _tokenize_segments(spans: Sequence[Span], tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[bool]]:
    """Ids of each run of equally labelled spans encoded on its own, concatenated (tokenizers without offsets)."""
    ids: list[int] = []
    flags: list[bool] = []
    for labelled, run in groupby(spans, key=lambda span: span[1]):
        run_ids = tokenizer.encode("".join(t for t, _ in run), add_special_tokens=False)
        ids += run_ids
        flags += [labelled] * len(run_ids)
    return ids, flags


def tokenize_spans(spans: Sequence[Span], tokenizer: PreTrainedTokenizerBase,
                   whole: bool | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``spans``: BOS first when the tokenizer has one; no truncation.

    ``whole`` (default: ``tokenizer.is_fast``) tokenizes the whole text at once and labels by character
    offsets; ``False`` encodes runs of equally labelled spans one by one (see the module docstring).
    """
    whole = bool(getattr(tokenizer, "is_fast", False)) if whole is None else whole
    ids, flags = (_tokenize_whole if whole else _tokenize_segments)(spans, tokenizer)
    bos = _bos(tokenizer)
    labels = [IGNORE_INDEX] * len(bos) + [t if f else IGNORE_INDEX for t, f in zip(ids, flags, strict=True)]
    return bos + ids, labels


def _encode_spans(spans: Sequence[Span], tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                  example_id: str) -> Encoded | None:
    input_ids, labels = tokenize_spans(spans, tokenizer)
    input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Encoded(tuple(input_ids), tuple(labels), example_id)


def encode_chat(messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, max_seq_len: int,
                example_id: str = "", *, label_newline: bool = True) -> Encoded | None:
    """Token ids and labels of a pool conversation, truncated from the right to ``max_seq_len`` tokens.

    Labels are the ids of the tokens of each assistant message's (stripped) content, its EOS and, with
    ``label_newline``, the newline after it (open-instruct / LESS); ``IGNORE_INDEX`` elsewhere. Returns
    ``None`` when truncation removed every labelled token (the caller reports it).
    """
    spans = chat_spans(messages, _eos(tokenizer), label_newline)
    return _encode_spans(spans, tokenizer, max_seq_len, example_id)


def encode_prompt(prompt_messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids of the prompt text alone (BOS included): what generation starts from (LESS's ``encode(query)``)."""
    return tokenize_spans([(render_prompt(prompt_messages, _eos(tokenizer)), False)], tokenizer)[0]


def encode_prompt_answer(prompt_messages: Sequence[Message], answer: str, tokenizer: PreTrainedTokenizerBase,
                         max_seq_len: int, example_id: str = "") -> Encoded | None:
    """Token ids and labels of a target row: masked prompt, ``"<|assistant|>\\n"`` (+ prefix), labelled answer.

    The answer is encoded verbatim (not stripped: LESS's answers keep their leading space, e.g. ``" B"``)
    and is not followed by EOS. Right truncation to ``max_seq_len``; ``None`` if no answer token survives.
    """
    spans = [(render_prompt(prompt_messages, _eos(tokenizer)), False), (answer, True)]
    return _encode_spans(spans, tokenizer, max_seq_len, example_id)


def _report_dropped(dropped: list[str], total: int, what: str, max_seq_len: int) -> None:
    if dropped:
        log.warning("%d of %d %s dropped: every answer token lies beyond max_seq_len=%d (first: %s)",
                    len(dropped), total, what, max_seq_len, ", ".join(dropped[:5]))


def encode_pool(df: pl.DataFrame, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, *,
                label_newline: bool = True) -> tuple[list[Encoded], list[str]]:
    """Encode every pool row (``example_id``, ``messages`` columns) with :func:`encode_chat`.

    Returns the kept encodings in row order and the example_ids dropped because truncation removed all
    their answer tokens (logged as a warning with the count and the first few ids).
    """
    kept: list[Encoded] = []
    dropped: list[str] = []
    for example_id, messages in zip(df["example_id"].to_list(), df["messages"].to_list(), strict=True):
        encoded = encode_chat(messages, tokenizer, max_seq_len, example_id, label_newline=label_newline)
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
