"""Top-k selection under one budget rule shared by every method."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from inflow.config import SelectConfig


def selection_size(n_pool: int, cfg: SelectConfig) -> int:
    """k = cfg.count if set, else ceil(fraction * n_pool); never more than the pool."""
    k = cfg.count if cfg.count > 0 else math.ceil(cfg.fraction * n_pool)
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
