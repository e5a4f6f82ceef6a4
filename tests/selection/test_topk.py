from __future__ import annotations

import numpy as np
import pytest

from inflow.config import SelectConfig
from inflow.selection import full_selection, random_selection, round_robin, select_by_rule, selection_size, top_k


def test_selection_size_rule() -> None:
    assert selection_size(6000, SelectConfig(fraction=0.05)) == 300
    assert selection_size(330, SelectConfig(fraction=0.05)) == 16  # LESS: int(fraction * n), rounds down
    assert selection_size(101, SelectConfig(fraction=0.05)) == 5
    assert selection_size(100, SelectConfig(fraction=0.29)) == int(0.29 * 100) == 28  # LESS's float product
    assert selection_size(10, SelectConfig(fraction=0.05)) == 1  # at least one row
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


def test_round_robin_takes_turns_and_skips_rows_already_taken() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    scores = np.array([
        [0.9, 0.8],  # a: best for both columns
        [0.8, 0.1],  # b
        [0.7, 0.7],  # c
        [0.1, 0.6],  # d
        [0.0, 0.5],  # e
        [0.2, 0.2],  # f
    ])
    got = round_robin(ids, scores, 4)
    # col 0 takes a; col 1's best (a) is taken, so c; col 0 then b; col 1 then d
    assert got["example_id"].to_list() == ["a", "c", "b", "d"]
    assert got["rank"].to_list() == [1, 2, 3, 4]
    np.testing.assert_allclose(got["score"].to_numpy(), [0.9, 0.7, 0.8, 0.6])  # the row's max, as LESS reports
    assert round_robin(ids, scores, 100)["example_id"].n_unique() == 6  # capped at the pool


def test_round_robin_balances_subtasks_where_max_collapses() -> None:
    """Column 0's scores sit higher than column 1's: max takes only column-0 rows, round robin half of each."""
    rng = np.random.default_rng(0)
    n = 200
    own = rng.integers(0, 2, size=n)  # the subtask each row serves
    scores = np.where(own[:, None] == np.arange(2), 0.5, 0.0) + rng.uniform(0, 0.1, size=(n, 2))
    scores[:, 0] += 0.3
    ids = [f"x{i:03d}" for i in range(n)]
    by_max = top_k(ids, scores.max(axis=1), 40)["example_id"].to_list()
    by_turns = round_robin(ids, scores, 40)["example_id"].to_list()
    served = dict(zip(ids, own))
    assert sum(served[i] for i in by_max) == 0
    assert sum(served[i] for i in by_turns) == 20


def test_round_robin_one_column_is_top_k_and_rejects_bad_input() -> None:
    ids = [f"r{i}" for i in range(10)]
    scores = np.random.default_rng(1).normal(size=10)
    scores[3] = scores[7]  # a tie, broken by id
    assert round_robin(ids, scores[:, None], 5).equals(top_k(ids, scores, 5))
    with pytest.raises(ValueError, match="need scores"):
        round_robin(ids, scores, 5)
    with pytest.raises(ValueError, match="NaN"):
        round_robin(ids, np.full((10, 2), np.nan), 5)


def test_select_by_rule_dispatches_to_the_subtask_rules() -> None:
    ids = [f"r{i}" for i in range(6)]
    scores = np.array([[0.9, 0.0], [0.8, 0.1], [0.7, 0.2], [0.1, 0.3], [0.0, 0.4], [0.5, 0.6]])
    assert select_by_rule(ids, scores, 3, "max")["example_id"].to_list() == ["r0", "r1", "r2"]
    assert select_by_rule(ids, scores, 3, "round_robin")["example_id"].to_list() == ["r0", "r5", "r1"]
    assert select_by_rule(ids, scores, 3, "max").equals(top_k(ids, scores.max(axis=1), 3))
    with pytest.raises(ValueError, match="round_robin or max"):
        select_by_rule(ids, scores, 3, "mean")
