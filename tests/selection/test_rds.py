"""RDS: pooling of right-padded hidden states and the mean-cosine score, against float64 references by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inflow.selection.rds import pool_hidden, rds_scores, unit_rows


def test_pooling_ignores_padding() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    lengths = [5, 2, 3]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    last = pool_hidden(hidden, mask, "last")
    mean = pool_hidden(hidden, mask, "mean")
    for i, n in enumerate(lengths):
        torch.testing.assert_close(last[i], hidden[i, n - 1])
        torch.testing.assert_close(mean[i], hidden[i, :n].mean(0))
    with pytest.raises(ValueError, match="last or mean"):
        pool_hidden(hidden, mask, "max")  # type: ignore[arg-type]


def test_scores_are_mean_cosines_per_subtask() -> None:
    rng = np.random.default_rng(0)
    pool, val = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    subtasks = ["y", "x", "y", "y", "x"]
    names, scores = rds_scores(pool, val, subtasks)
    assert names == ["x", "y"] and scores.shape == (6, 2)
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    for i in range(6):
        for j, name in enumerate(names):
            expected = np.mean([cos(pool[i], val[v]) for v in range(5) if subtasks[v] == name])
            assert scores[i, j] == pytest.approx(expected, abs=1e-12)


def test_a_copy_scores_one_and_zero_rows_stay_zero() -> None:
    val = np.array([[1.0, 2.0, 3.0]])
    names, scores = rds_scores(np.array([[2.0, 4.0, 6.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]), val, ["s"])
    assert scores[0, 0] == pytest.approx(1.0) and scores[1, 0] == 0.0 and scores[2, 0] < 0
    np.testing.assert_array_equal(unit_rows(np.zeros((2, 3))), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 subtask labels for 1"):
        rds_scores(val, val, ["a", "b"])
