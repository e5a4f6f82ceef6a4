"""Top-k selection under one budget rule shared by every method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from inflow.config import SelectConfig


def selection_size(n_pool: int, cfg: SelectConfig) -> int:
    """The budget k: ``cfg.count`` if set, else LESS's ``int(fraction * n_pool)``; at least 1, at most the pool.

    The fraction rounds down, as LESS's ``write_selected_data.py`` does (330 rows at 5% -> 16, not 17), and
    with the same float product (0.29 * 100 is 28.999..., so 28), so a budget matches LESS's to the row.
    At least one row is selected from a non-empty pool, so a tiny pool or fraction never selects nothing.
    """
    k = cfg.count if cfg.count > 0 else int(cfg.fraction * n_pool)
    return max(1, min(k, n_pool))


def top_k(example_ids: Sequence[str], scores: np.ndarray, k: int) -> pl.DataFrame:
    """The k highest-scoring rows, best first: columns example_id, score, rank (1-based).

    Ties are broken by example_id so the result does not depend on row order.
    """
    if len(example_ids) != len(scores):
        raise ValueError(f"{len(example_ids)} ids for {len(scores)} scores")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a gradient feature is degenerate (check the features stage log)")
    frame = pl.DataFrame({"example_id": list(example_ids), "score": np.asarray(scores, dtype=np.float64)})
    frame = frame.sort(["score", "example_id"], descending=[True, False]).head(k)
    return frame.with_columns(pl.int_range(1, pl.len() + 1).alias("rank"))


def round_robin(example_ids: Sequence[str], scores: np.ndarray, k: int) -> pl.DataFrame:
    """k rows picked by the columns of ``scores`` [n, K] in turn, each taking its best row not yet picked.

    Column 0 picks first, then 1, ..., K-1, then 0 again, until k rows are picked (or the pool is exhausted).
    Returns example_id, score (the row's max over columns, as LESS reports it) and rank (the pick order,
    1-based). Ties within a column are broken by example_id. With K = 1 this is :func:`top_k`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(example_ids) != scores.shape[0]:
        raise ValueError(f"need scores [n, K] for {len(example_ids)} ids, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a gradient feature is degenerate (check the features stage log)")
    n, n_cols = scores.shape
    k = min(k, n)
    tiebreak = np.argsort(np.asarray(example_ids, dtype=object), kind="stable")
    rank_of_id = np.empty(n, dtype=np.int64)
    rank_of_id[tiebreak] = np.arange(n)
    # per column: rows by descending score, then ascending example_id
    orders = [np.lexsort((rank_of_id, -scores[:, j])) for j in range(n_cols)]
    taken = np.zeros(n, dtype=bool)
    cursor = [0] * n_cols
    picked: list[int] = []
    while len(picked) < k:
        for j in range(n_cols):
            order = orders[j]
            while taken[order[cursor[j]]]:
                cursor[j] += 1
            row = int(order[cursor[j]])
            taken[row] = True
            picked.append(row)
            if len(picked) == k:
                break
    return pl.DataFrame({"example_id": [example_ids[i] for i in picked],
                         "score": scores[picked].max(axis=1),
                         "rank": np.arange(1, len(picked) + 1)})


def select_by_rule(example_ids: Sequence[str], per_subtask: np.ndarray, k: int, rule: str) -> pl.DataFrame:
    """k rows from per-subtask scores ``[n, S]`` under ``select.subtask_rule``: ``round_robin`` (each subtask in
    turn takes its best row left) or ``max`` (LESS's paper: the top k of the max over subtasks)."""
    if rule == "max":
        return top_k(example_ids, np.asarray(per_subtask, dtype=np.float64).max(axis=1), k)
    if rule == "round_robin":
        return round_robin(example_ids, per_subtask, k)
    raise ValueError(f"unknown subtask rule {rule!r}; use round_robin or max")
