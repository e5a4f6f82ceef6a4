"""Which pool rows become landmarks (Influence Distillation, DESIGN §6): the few rows whose influence is computed
exactly and then propagated to every other row through their embeddings.

* ``random``: a uniform sample without replacement.
* ``kmeans++``: k-means++ seeding in embedding space (scikit-learn's ``kmeans_plusplus``): each next landmark is
  drawn with probability proportional to its squared distance to the nearest landmark so far, so the landmarks
  spread over the pool's clusters and propagation never has to reach far. O(n · L · d), no Lloyd iterations.

Both are deterministic functions of the seed and return row indices in ascending order (store order), so the
landmark store reads the pool sequentially.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LandmarkRule = Literal["random", "kmeans++"]


def choose_landmarks(embeddings: np.ndarray, count: int, rule: LandmarkRule, seed: int) -> np.ndarray:
    """``min(count, n)`` distinct row indices of ``embeddings [n, d]``, ascending.

    ``kmeans++`` needs the raw (not normalised) embeddings: the RBF propagation works on the same distances.
    """
    n = embeddings.shape[0]
    if n == 0:
        raise ValueError("no rows to draw landmarks from: the pool is empty")
    count = min(count, n)
    if count == n:
        return np.arange(n)
    if rule == "random":
        picked = np.random.default_rng(seed).choice(n, size=count, replace=False)
    elif rule == "kmeans++":
        from sklearn.cluster import (
            kmeans_plusplus,  # scikit-learn imports slowly: only where it is used
        )

        _centers, picked = kmeans_plusplus(np.ascontiguousarray(embeddings, dtype=np.float64), count,
                                           random_state=seed)
        if len(np.unique(picked)) < count:  # duplicate points can repeat a seed: top up at random, reproducibly
            rest = np.setdiff1d(np.arange(n), picked)
            extra = np.random.default_rng(seed).choice(rest, size=count - len(np.unique(picked)), replace=False)
            picked = np.concatenate([np.unique(picked), extra])
    else:
        raise ValueError(f"unknown landmark rule {rule!r}: use random or kmeans++ (distill.landmark_rule)")
    return np.sort(np.asarray(picked, dtype=np.int64))
