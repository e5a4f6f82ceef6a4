"""Test-split metrics: mean answer-token loss and exact match of greedy generations.

Loss: for each test row, the mean cross-entropy of its answer tokens given the rendered prompt (the same
loss the selection methods reason about); the split's loss is the mean over rows. Exact match: the greedy
continuation of the prompt, up to EOS or the generation budget (``inflow.evaluation.generation``), equals the
answer after whitespace normalisation. Batches are padded with ``pad_token_id(tokenizer)`` (pad, else EOS),
so tokenizers without a pad token (Llama's) work; padding is masked and never changes a metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import torch
from transformers import PreTrainedTokenizerBase

from inflow.data.batching import IGNORE_INDEX, Encoded, collate
from inflow.data.render import encode_targets
from inflow.devices import autocast
from inflow.evaluation.generation import answer_lengths, generate_answers, generation_budget
from inflow.gradients.per_example import example_losses
from inflow.models.tokenizer import pad_token_id


def normalize_answer(text: str) -> str:
    """Collapse whitespace and strip: the comparison form for exact match."""
    return " ".join(text.split())


def _prompt_ids(example: Encoded) -> list[int]:
    first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    return list(example.input_ids[:first])


@torch.no_grad()
def answer_losses(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, batch_size: int,
                  device: torch.device | None = None, dtype: torch.dtype | None = None) -> list[float]:
    """Per-row mean answer-token cross-entropy (nats), right-padded batches on ``device`` under autocast ``dtype``.

    loss_i = mean over answer positions t of -log p(x_t | x_<t); computed from float32 logits.
    """
    device = device or next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded[start:start + batch_size], pad_id).items()}
        with autocast(device, dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.extend(example_losses(logits.float(), batch["labels"]).tolist())
    return out


def evaluate_split(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    split: pl.DataFrame,
    max_seq_len: int,
    batch_size: int,
    max_new_tokens: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    task: str = "",
) -> dict:
    """Metrics of ``model`` on ``split`` (columns example_id, subtask, prompt_messages, answer).

    ``max_new_tokens``: 0 = the longest answer + a margin, else as given (see ``generation_budget``).
    ``device`` defaults to the model's; ``dtype`` is the autocast dtype (None: float32). Returns
    {"loss", "exact_match", "n", "max_new_tokens", "answers_too_long", "subtasks": {name: {"loss",
    "exact_match", "n"}}, "examples"}; ``answers_too_long`` counts answers longer than the budget.
    """
    if split.height == 0:
        raise ValueError(f"the test split{f' of {task}' if task else ''} has no rows: nothing to evaluate")
    model.eval()
    encoded, dropped = encode_targets(split, tokenizer, max_seq_len)
    if dropped:
        raise ValueError(f"{len(dropped)} test rows{f' of {task}' if task else ''} lose their whole answer at "
                         f"max_seq_len={max_seq_len}; raise data.max_seq_len")
    answers = split["answer"].to_list()
    lengths = answer_lengths(tokenizer, answers)
    budget = generation_budget(lengths, max_new_tokens, task)
    losses = answer_losses(model, encoded, pad_token_id(tokenizer), batch_size, device, dtype)
    generations = generate_answers(model, tokenizer, [_prompt_ids(e) for e in encoded], batch_size, budget,
                                   device, dtype)
    hits = [float(normalize_answer(g) == normalize_answer(a)) for g, a in zip(generations, answers)]
    rows = pl.DataFrame({"subtask": split["subtask"], "loss": losses, "hit": hits})
    per = rows.group_by("subtask").agg(pl.col("loss").mean(), pl.col("hit").mean(), pl.len()).sort("subtask")
    return {
        "loss": float(sum(losses) / len(losses)),
        "exact_match": float(sum(hits) / len(hits)),
        "n": len(losses),
        "max_new_tokens": budget,
        "answers_too_long": sum(length > budget for length in lengths),
        "subtasks": {r["subtask"]: {"loss": r["loss"], "exact_match": r["hit"], "n": r["len"]}
                     for r in per.iter_rows(named=True)},
        "examples": [{"answer": a, "generation": g} for a, g in list(zip(answers, generations))[:3]],
    }
