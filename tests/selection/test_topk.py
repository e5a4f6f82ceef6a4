from __future__ import annotations

import numpy as np
import pytest

from inflow.config import SelectConfig
from inflow.selection import full_selection, random_selection, selection_size, top_k


def test_selection_size_rule() -> None:
    assert selection_size(6000, SelectConfig(fraction=0.05)) == 300
    assert selection_size(101, SelectConfig(fraction=0.05)) == 6  # ceil
    assert selection_size(100, SelectConfig(fraction=0.05, count=7)) == 7
    assert selection_size(5, SelectConfig(count=50)) == 5


def test_top_k_orders_and_breaks_ties_by_id() -> None:
    ids = ["d", "a", "c", "b"]
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    table = top_k(ids, scores, 3)
    assert table["example_id"].to_list() == ["a", "c", "d"]
    assert table["rank"].to_list() == [1, 2, 3]
    # independent of input order
    perm = [2, 0, 3, 1]
    again = top_k([ids[i] for i in perm], scores[perm], 3)
    assert again["example_id"].to_list() == table["example_id"].to_list()


def test_top_k_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        top_k(["a", "b"], np.array([np.nan, 1.0]), 1)


def test_random_selection_is_seeded_and_unique() -> None:
    ids = [f"x{i}" for i in range(100)]
    a = random_selection(ids, 10, seed=3)["example_id"].to_list()
    assert a == random_selection(ids, 10, seed=3)["example_id"].to_list()
    assert a != random_selection(ids, 10, seed=4)["example_id"].to_list()
    assert len(set(a)) == 10


def test_full_selection_keeps_everything() -> None:
    ids = ["a", "b", "c"]
    assert full_selection(ids)["example_id"].to_list() == ids
