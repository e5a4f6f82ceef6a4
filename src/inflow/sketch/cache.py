"""A byte-budgeted cache of generated sketch pieces, shared by the blocks of one :class:`BlockSketch`.

Regenerating the same random signs for every batch is wasteful (hashing costs about as much as the projection
itself for the dense Rademacher sketch), so generated pieces are kept up to a memory budget. The policy is
*first come, first kept*, with no eviction: every ``project`` call walks the pieces in the same cyclic order, and
for a cyclic scan larger than the cache LRU would evict each piece just before it is needed again (hit rate zero),
while keep-first serves a fixed ``budget / total`` share of the pieces from memory on every call.

Thread-safe: blocks of one sketch are projected concurrently (:meth:`BlockSketch.project` with an executor). Two
threads missing the same piece may both generate it (same values); only one copy is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

from torch import Tensor

T = TypeVar("T", Tensor, tuple[Tensor, ...])

MIB = 1 << 20
DEFAULT_CACHE_BYTES = 256 * MIB


def tensor_bytes(value: Tensor | tuple[Tensor, ...]) -> int:
    """Bytes held by a tensor or a tuple of tensors."""
    parts = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in parts)


class PieceCache:
    """Generated pieces keyed by their coordinates, kept while their total size fits ``budget_bytes``."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, got {budget_bytes} (use 0 to disable caching)")
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: dict[Hashable, Tensor | tuple[Tensor, ...]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The piece stored under ``key``, or ``make()`` (kept when it still fits the budget)."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self.hits += 1
                return hit  # type: ignore[return-value]
            self.misses += 1
        value = make()  # outside the lock: other blocks' pieces are generated meanwhile
        size = tensor_bytes(value)
        with self._lock:
            if key not in self._items and self.used_bytes + size <= self.budget_bytes:
                self._items[key] = value
                self.used_bytes += size
        return value

    def clear(self) -> None:
        """Drop every piece (e.g. to free memory between stages)."""
        with self._lock:
            self._items.clear()
            self.used_bytes = 0
