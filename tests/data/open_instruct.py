"""Reference encodings written from open-instruct's and LESS's rules, the oracles for ``inflow.data.render``.

``open_instruct_chat`` follows open-instruct's ``encode_with_messages_format`` (which LESS's training and
gradient scripts call): tokenize the whole rendered conversation at once, then set -100 on every
non-assistant message, from the token count of the text before it to the token count of the text through
it, plus the ``"<|assistant|>\\n"`` marker when an assistant message follows. Everything else (assistant
content, its EOS, the newline after it) keeps its id. ``less_prompt_answer`` follows LESS's validation
``tokenize``: the whole ``query + completion`` at once, -100 on the first ``len(tokenize(query))`` tokens.

Both count tokens with ``add_special_tokens=False`` and then put BOS first when the tokenizer has one, which
is what ``inflow.data.render`` does for every tokenizer (open-instruct leaves BOS to the tokenizer; a
Llama-2 tokenizer adds it, so the two agree there). No truncation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inflow.data.batching import IGNORE_INDEX
from inflow.data.render import render_chat, render_prompt


# Multi-turn rows with system messages, for the token-by-token comparison with open-instruct's encoding.
ROWS = [
    [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "Add 2 and 3."},
     {"role": "assistant", "content": " The sum is 5. "}, {"role": "user", "content": "And 4 and 4?"},
     {"role": "assistant", "content": "It is 8."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Question: what is the sum?"},
     {"role": "assistant", "content": "5"}, {"role": "user", "content": "and 2 and 3?"},
     {"role": "assistant", "content": "The answer is: 5\n\nDone."}],
    [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "(5) sum"},
     {"role": "user", "content": "Thanks"}],
    [{"role": "system", "content": "naïve 東京 🙂"}, {"role": "user", "content": "x"},
     {"role": "assistant", "content": "naïve 東京 🙂 ~`|"}],
]

# Target rows (prompt messages, answer): with a response prefix, without one, after earlier turns.
TARGET_ROWS = [
    ([{"role": "user", "content": "Question: what is the sum?"}, {"role": "assistant", "content": "The answer is:"}],
     " B"),
    ([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Question: what is the sum?"}],
     "sum"),
    ([{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"},
      {"role": "user", "content": "And 4 and 4?"}, {"role": "assistant", "content": "A:"}], " 8 (eight)"),
]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _with_bos(tokenizer, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    if tokenizer.bos_token_id is None:
        return ids, labels
    return [tokenizer.bos_token_id, *ids], [IGNORE_INDEX, *labels]


def open_instruct_chat(messages: Sequence[Mapping[str, str]], tokenizer) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a conversation by open-instruct's prefix-length masking."""
    eos = tokenizer.eos_token
    ids = _ids(tokenizer, render_chat(messages, eos))
    labels = list(ids)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            continue
        start = len(_ids(tokenizer, render_chat(messages[:i], eos))) if i else 0
        through = render_chat(messages[: i + 1], eos)
        if i + 1 < len(messages) and messages[i + 1]["role"] == "assistant":
            through += "<|assistant|>\n"
        end = len(_ids(tokenizer, through))
        labels[start:end] = [IGNORE_INDEX] * (end - start)
    return _with_bos(tokenizer, ids, labels)


def less_prompt_answer(prompt_messages: Sequence[Mapping[str, str]], answer: str,
                       tokenizer) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a target row by LESS's query + completion rule."""
    query = render_prompt(prompt_messages, tokenizer.eos_token)
    ids = _ids(tokenizer, query + answer)
    n_query = len(_ids(tokenizer, query))
    labels = [IGNORE_INDEX] * n_query + ids[n_query:]
    return _with_bos(tokenizer, ids, labels)
