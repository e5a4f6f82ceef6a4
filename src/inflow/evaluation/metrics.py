"""Test-split metrics: mean answer-token loss and exact match of greedy generations.

Loss: for each test row, the mean cross-entropy of its answer tokens given the rendered prompt (the same
loss the selection methods reason about); the split's loss is the mean over rows. Exact match: the greedy
continuation of the prompt, up to EOS or ``max_new_tokens``, equals the answer after whitespace
normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import torch
from transformers import PreTrainedTokenizerBase

from inflow.data.batching import IGNORE_INDEX, Encoded, collate
from inflow.data.render import encode_targets
from inflow.gradients.per_example import example_losses


def normalize_answer(text: str) -> str:
    """Collapse whitespace and strip: the comparison form for exact match."""
    return " ".join(text.split())


def _prompt_ids(example: Encoded) -> list[int]:
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    return list(example.input_ids[:first])


@torch.no_grad()
def _losses(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, batch_size: int) -> list[float]:
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start:start + batch_size], pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.extend(example_losses(logits.float(), batch["labels"]).tolist())
    return out


@torch.no_grad()
def _generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]],
              batch_size: int, max_new_tokens: int) -> list[str]:
    out: list[str] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])  # left padding for generation
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        out.extend(tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True))
    return out


def evaluate_split(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    split: pl.DataFrame,
    max_seq_len: int,
    batch_size: int,
    max_new_tokens: int,
) -> dict:
    """Metrics of ``model`` on ``split`` (columns example_id, subtask, prompt_messages, answer).

    Returns {"loss", "exact_match", "n", "subtasks": {name: {"loss", "exact_match", "n"}}}.
    """
    model.eval()
    encoded, dropped = encode_targets(split, tokenizer, max_seq_len)
    if dropped:
        raise ValueError(f"{len(dropped)} test rows lose their whole answer at max_seq_len={max_seq_len}; "
                         "raise data.max_seq_len")
    losses = _losses(model, encoded, tokenizer.pad_token_id, batch_size)
    generations = _generate(model, tokenizer, [_prompt_ids(e) for e in encoded], batch_size, max_new_tokens)
    hits = [float(normalize_answer(g) == normalize_answer(a)) for g, a in zip(generations, split["answer"])]
    rows = pl.DataFrame({"subtask": split["subtask"], "loss": losses, "hit": hits})
    per = rows.group_by("subtask").agg(pl.col("loss").mean(), pl.col("hit").mean(), pl.len()).sort("subtask")
    return {
        "loss": float(sum(losses) / len(losses)),
        "exact_match": float(sum(hits) / len(hits)),
        "n": len(losses),
        "subtasks": {r["subtask"]: {"loss": r["loss"], "exact_match": r["hit"], "n": r["len"]}
                     for r in per.iter_rows(named=True)},
        "examples": [{"answer": a, "generation": g} for a, g in list(zip(split["answer"], generations))[:3]],
    }
