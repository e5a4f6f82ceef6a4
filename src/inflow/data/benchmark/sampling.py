"""Small seeded-sampling helpers shared by the benchmark modules.

Every random draw in the benchmark goes through a ``numpy.random.Generator`` handed down from
:func:`inflow.data.benchmark.generate.generate_benchmark` (itself spawned from one ``SeedSequence``), so a
config always produces the same files. :func:`apportion` splits a row budget into exact integer shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """One element of ``items``, uniformly at random."""
    return items[int(rng.integers(len(items)))]


def sample(rng: np.random.Generator, items: Sequence[T], k: int) -> list[T]:
    """``k`` distinct elements of ``items`` (distinct positions), in random order."""
    return [items[int(i)] for i in rng.choice(len(items), size=k, replace=False)]


def shuffled(rng: np.random.Generator, items: Sequence[T]) -> list[T]:
    """A random permutation of ``items`` as a new list."""
    return sample(rng, items, len(items))


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` that sum exactly to ``total``.

    Largest-remainder (Hamilton) rounding: each part is ``floor(total * w_i / sum(w))`` and the leftover
    units go to the largest fractional remainders, ties to the earlier index, so the result is
    deterministic and every part is within 1 of its exact share.
    """
    if total < 0:
        raise ValueError(f"apportion: total must be >= 0, got {total}; pass a non-negative row count")
    weight_sum = float(sum(weights))
    if not weights or weight_sum <= 0.0:
        raise ValueError("apportion: weights must contain at least one positive value; pass e.g. [1, 1]")
    exact = [total * w / weight_sum for w in weights]
    parts = [int(np.floor(x)) for x in exact]
    leftover = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:leftover]:
        parts[i] += 1
    return parts
