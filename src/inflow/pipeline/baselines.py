"""The baselines every selection is judged against (stages ``baselines``, ``bm25``, ``rds``).

Untargeted: ``random`` (select's budget; and ``random_in2core`` at In2Core's) and ``full`` (the whole pool).
Targeted, at select's budget and under ``select.subtask_rule`` like LESS: ``bm25`` (lexical overlap of a pool
row's text with the validation rows) and ``rds`` (cosine of the selector base model's hidden states). Each
targeted stage writes the shared selection files, ``scores.parquet`` (the task score, the max over subtasks, and
one column per subtask) and ``<method>.json`` with its wall time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from inflow.config import BaselinesConfig, DataConfig, SelectConfig
from inflow.data.batching import Encoded, collate, length_batches
from inflow.data.pool import load_pool
from inflow.data.render import encode_pool, encode_targets, render_chat, render_prompt
from inflow.data.targets import TargetTask, load_targets
from inflow.devices import resolve_device
from inflow.models.loading import load_causal_lm
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.paths import selection_dir
from inflow.selection import full_selection, random_selection, select_by_rule, selection_size, write_selection
from inflow.selection.bm25 import bm25_scores, subtask_mean_scores
from inflow.selection.outputs import ALL_TARGETS
from inflow.selection.rds import Pooling, pool_hidden, rds_scores

log = logging.getLogger(__name__)


def run_baselines(select: SelectConfig, data: DataConfig, coreset: SelectConfig | None = None) -> dict:
    """Random (same k as every method) and full-pool selections, each serving all targets; with ``coreset``
    (In2Core's budget, ``in2core.fraction``/``count``) also ``random_in2core``, random rows at that budget."""
    pool = load_pool(data.pool)
    ids = pool["example_id"].to_list()
    k = selection_size(len(pool), select)
    write_selection({ALL_TARGETS: random_selection(ids, k, select.seed)}, pool, selection_dir("random"),
                    "random", "none")
    write_selection({ALL_TARGETS: full_selection(ids)}, pool, selection_dir("full"), "full", "none")
    manifest = {"k": k, "pool": len(pool)}
    if coreset is not None:
        manifest["k_in2core"] = selection_size(len(pool), coreset)
        write_selection({ALL_TARGETS: random_selection(ids, manifest["k_in2core"], select.seed)}, pool,
                        selection_dir("random_in2core"), "random_in2core", "none")
    return manifest


def _write_targeted(method: str, per_task: dict[str, tuple[list[str], np.ndarray]], ids: Sequence[str],
                    pool: pl.DataFrame, select: SelectConfig, selector: str, out_dir: Path,
                    manifest: dict) -> dict:
    """Select k rows per task from its per-subtask scores ``[n, S]`` (rows in ``ids`` order) and write the
    selection files, ``scores.parquet`` and ``<method>.json``; returns the manifest."""
    k = selection_size(len(pool), select)
    tables = {task: select_by_rule(ids, scores, k, select.subtask_rule) for task, (_, scores) in per_task.items()}
    write_selection(tables, pool, out_dir, method, selector)
    columns = {f"score_{task}": scores.max(axis=1) for task, (_, scores) in per_task.items()}
    for task, (names, scores) in per_task.items():
        columns.update({f"score_{task}/{name}": scores[:, j] for j, name in enumerate(names)})
    pl.DataFrame({"example_id": list(ids), **columns}).write_parquet(out_dir / "scores.parquet")
    manifest = {"k": k, "pool": len(ids), "subtask_rule": select.subtask_rule, "targets": list(per_task),
                "subtasks": {task: names for task, (names, _) in per_task.items()}, **manifest}
    (out_dir / f"{method}.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def run_bm25(select: SelectConfig, cfg: BaselinesConfig, data: DataConfig, out_dir: str | Path | None = None) -> dict:
    """BM25 selection for every target task: each pool row's rendered conversation scored against each validation
    row's rendered prompt and answer, averaged per subtask; writes ``data/selections/bm25``."""
    started = time.perf_counter()
    out_dir = Path(out_dir or selection_dir("bm25"))
    pool = load_pool(data.pool)
    ids = pool["example_id"].to_list()
    documents = [render_chat(messages, "") for messages in pool["messages"].to_list()]
    per_task = {}
    for task in load_targets(data):
        queries = [render_prompt(p, "") + a for p, a in zip(task.val["prompt_messages"].to_list(),
                                                           task.val["answer"].to_list(), strict=True)]
        scores = bm25_scores(documents, queries, cfg.bm25_k1, cfg.bm25_b)  # [n, m]
        per_task[task.name] = subtask_mean_scores(scores, task.val["subtask"].to_list())
    return _write_targeted("bm25", per_task, ids, pool, select, "none", out_dir,
                           {"k1": cfg.bm25_k1, "b": cfg.bm25_b, "seconds": round(time.perf_counter() - started, 3)})


@torch.no_grad()
def representations(model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, pooling: Pooling,
                    batch_size: int, device: torch.device, desc: str = "rds") -> np.ndarray:
    """Pooled final hidden states ``[len(rows), hidden]`` float64 of ``rows`` (in row order), batched by length."""
    out: np.ndarray | None = None
    batches = length_batches([len(r) for r in rows], batch_size)
    for index in tqdm(batches, desc=desc, unit="batch", leave=False, mininterval=2.0):
        batch = collate([rows[i] for i in index], pad_id)
        mask = batch["attention_mask"].to(device)
        hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                       output_hidden_states=True).hidden_states[-1]  # [B, T, h]
        pooled = pool_hidden(hidden.float(), mask, pooling).double().cpu().numpy()
        if out is None:
            out = np.empty((len(rows), pooled.shape[1]), dtype=np.float64)
        out[index] = pooled
    assert out is not None, "representations of no rows"
    return out


def run_rds(select: SelectConfig, cfg: BaselinesConfig, data: DataConfig, model_dir: str | Path,
            selector: str = "selector", out_dir: str | Path | None = None,
            tasks: Sequence[TargetTask] | None = None) -> dict:
    """RDS selection for every target task with the model at ``model_dir`` (the selector base model): each pool
    row's pooled final hidden state against each validation subtask's (mean cosine); writes
    ``data/selections/rds``."""
    started = time.perf_counter()
    out_dir = Path(out_dir or selection_dir("rds"))
    device = resolve_device(cfg.rds_device, "baselines.rds_device")
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).to(device).eval()
    pad = pad_token_id(tokenizer)
    pool = load_pool(data.pool)
    encoded, _dropped = encode_pool(pool, tokenizer, data.max_seq_len, label_newline=data.label_newline)
    ids = [row.example_id for row in encoded]
    pool_reps = representations(model, encoded, pad, cfg.rds_pooling, cfg.rds_batch_size, device, "rds pool")
    per_task = {}
    for task in tasks if tasks is not None else load_targets(data):
        val, _ = encode_targets(task.val, tokenizer, data.max_seq_len)
        subtask_of = dict(zip(task.val["example_id"].to_list(), task.val["subtask"].to_list(), strict=True))
        val_reps = representations(model, val, pad, cfg.rds_pooling, cfg.rds_batch_size, device, f"rds {task.name}")
        per_task[task.name] = rds_scores(pool_reps, val_reps, [subtask_of[row.example_id] for row in val])
    return _write_targeted("rds", per_task, ids, pool, select, selector, out_dir,
                           {"pooling": cfg.rds_pooling, "model": str(model_dir),
                            "seconds": round(time.perf_counter() - started, 3)})
