"""Baseline selections: a random subset of the same size, and the full pool."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def random_selection(example_ids: Sequence[str], k: int, seed: int) -> pl.DataFrame:
    """k rows drawn uniformly without replacement; score is a uniform draw, rank by it."""
    rng = np.random.default_rng(seed)
    scores = rng.random(len(example_ids))
    order = np.argsort(-scores, kind="stable")[:k]
    return pl.DataFrame({
        "example_id": [example_ids[i] for i in order],
        "score": scores[order],
        "rank": np.arange(1, len(order) + 1),
    })


def full_selection(example_ids: Sequence[str]) -> pl.DataFrame:
    """Every row of the pool (score 0, rank in pool order)."""
    return pl.DataFrame({
        "example_id": list(example_ids),
        "score": np.zeros(len(example_ids)),
        "rank": np.arange(1, len(example_ids) + 1),
    })
