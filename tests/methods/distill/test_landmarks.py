"""Landmark choice: distinct, sorted, seeded, capped by the pool; k-means++ covers every cluster where random
sampling of the same size misses some."""

from __future__ import annotations

import numpy as np
import pytest

from inflow.methods.distill.landmarks import choose_landmarks


def _clusters(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight Gaussian blobs far apart, of the given sizes; (points [n, 8], cluster label [n])."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=100.0, size=(len(sizes), 8))
    points = np.concatenate([c + rng.normal(scale=0.1, size=(s, 8)) for c, s in zip(centres, sizes)])
    return points, np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("rule", ["random", "kmeans++"])
def test_landmarks_are_distinct_sorted_seeded_and_capped(rule: str) -> None:
    points, _ = _clusters([40, 30, 30])
    picked = choose_landmarks(points, 12, rule, seed=3)
    assert len(picked) == 12 and len(np.unique(picked)) == 12 and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(picked, choose_landmarks(points, 12, rule, seed=3))
    assert not np.array_equal(picked, choose_landmarks(points, 12, rule, seed=4))
    np.testing.assert_array_equal(choose_landmarks(points, 500, rule, seed=3), np.arange(100))


def test_kmeans_plus_plus_reaches_small_clusters_that_random_misses() -> None:
    sizes = [900] + [5] * 9  # one big cluster and nine small ones
    points, label = _clusters(sizes)
    covered_kpp = [len(set(label[choose_landmarks(points, 10, "kmeans++", s)])) for s in range(5)]
    covered_random = [len(set(label[choose_landmarks(points, 10, "random", s)])) for s in range(5)]
    assert min(covered_kpp) == 10  # every cluster gets a landmark
    assert max(covered_random) < 10


def test_unknown_rule_and_empty_pool_are_refused() -> None:
    with pytest.raises(ValueError, match="distill.landmark_rule"):
        choose_landmarks(np.zeros((5, 2)), 2, "farthest", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        choose_landmarks(np.zeros((0, 2)), 2, "random", 0)
