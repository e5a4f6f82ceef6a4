"""Which examples a gradient store holds: a row manifest (example id + content hash per row) and growth plans.

A store built from a :class:`RowManifest` records, for every row (pending ones included), its ``example_id`` and a
64-bit hash of the content the features are computed from (the pipeline hashes the tokenized example). When the
pool grows, :func:`plan_growth` compares the stored manifest with the rows asked for now:

* an id whose content hash changed: refused (its stored features are stale; give edited examples new ids, or
  rebuild the store);
* a stored id missing now (rows removed from the pool): refused (stores never shrink: rows are what scores and
  selections index, and a silently shorter store would misalign them; rebuild the store, or restore the rows);
* ids not stored yet: appended after the stored rows, in the order they are asked for.

Rows already stored keep their positions, so a pool that only grows at its end gives a store whose row order is
the pool order, exactly like a store built from scratch on the grown pool.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inflow.errors import StoreMismatchError

SHOW = 5  # ids quoted in an error message


def row_hash(example_id: str, *parts: bytes) -> int:
    """blake2b-64 of one row's content: its id and the byte strings its features are computed from."""
    h = hashlib.blake2b(digest_size=8)
    for piece in (str(example_id).encode("utf-8"), *parts):
        h.update(struct.pack("<Q", len(piece)))
        h.update(piece)
    return int.from_bytes(h.digest(), "little")


@dataclass(frozen=True, eq=False)
class RowManifest:
    """Example ids and content hashes of a store's rows, in row order: ``ids [n]`` str, ``hashes [n]`` uint64."""

    ids: tuple[str, ...]
    hashes: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))
        object.__setattr__(self, "hashes", np.asarray(self.hashes, dtype=np.uint64).reshape(-1))
        if len(self.ids) != len(self.hashes):
            raise ValueError(f"{len(self.ids)} example ids for {len(self.hashes)} row hashes")

    @classmethod
    def build(cls, ids: Sequence[str], hashes: Sequence[int] | np.ndarray) -> RowManifest:
        """A manifest of unique ids; a repeated id raises ``ValueError`` naming it (rows are keyed by id)."""
        manifest = cls(tuple(ids), np.asarray(hashes, dtype=np.uint64))
        if len(set(manifest.ids)) != len(manifest.ids):
            repeated = [i for i, count in Counter(manifest.ids).items() if count > 1]
            raise ValueError(f"example ids repeat ({repeated[:SHOW]}): every row of a store needs its own id; "
                             "deduplicate the pool (or give the copies distinct example_id values)")
        return manifest

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """16 hex digits identifying the rows and their order (``StoreAttrs.data_hash`` of a store holding them)."""
        h = hashlib.blake2b(digest_size=8)
        h.update(struct.pack("<Q", len(self.ids)))
        h.update(np.ascontiguousarray(self.hashes, dtype="<u8").tobytes())
        for example_id in self.ids:
            data = example_id.encode("utf-8")
            h.update(struct.pack("<I", len(data)))
            h.update(data)
        return h.hexdigest()

    def select(self, start: int, stop: int) -> RowManifest:
        """Rows ``start..stop-1``."""
        return RowManifest(self.ids[start:stop], self.hashes[start:stop])

    def concat(self, other: RowManifest) -> RowManifest:
        """These rows followed by ``other``'s."""
        return RowManifest(self.ids + other.ids, np.concatenate([self.hashes, other.hashes]))


@dataclass(frozen=True, eq=False)
class Growth:
    """How a store grows: ``new`` rows appended after its ``n_old`` rows; ``reopened`` is the partial last chunk
    (``None`` when ``n_old`` is a multiple of ``chunk_rows``), which must be extracted again as a whole."""

    n_old: int
    new: RowManifest
    chunk_rows: int

    @property
    def n_rows(self) -> int:
        """Rows after growing."""
        return self.n_old + len(self.new)

    @property
    def reopened(self) -> int | None:
        if not len(self.new) or self.n_old % self.chunk_rows == 0:
            return None
        return self.n_old // self.chunk_rows


def plan_growth(stored: RowManifest, wanted: RowManifest, chunk_rows: int, location: str) -> Growth:
    """Compare the rows a store holds with the rows asked for now (see the module docstring).

    Raises :class:`StoreMismatchError` when a stored row changed content or is no longer asked for.
    """
    position = {example_id: i for i, example_id in enumerate(wanted.ids)}
    removed = [i for i in stored.ids if i not in position]
    if removed:
        raise StoreMismatchError(
            f"the gradient store at {location} holds {len(removed)} rows that are no longer in the data "
            f"(first: {removed[:SHOW]}). A store only grows: restore those rows (appending new rows is fine), or "
            f"delete {location} and rerun the features stage to rebuild it on the current data."
        )
    at = np.fromiter((position[i] for i in stored.ids), dtype=np.int64, count=len(stored))
    changed = np.flatnonzero(wanted.hashes[at] != stored.hashes) if len(stored) else np.zeros(0, dtype=np.int64)
    if changed.size:
        names = [stored.ids[i] for i in changed[:SHOW]]
        raise StoreMismatchError(
            f"{changed.size} rows of the gradient store at {location} changed content under the same example_id "
            f"(first: {names}): their stored features are stale. Give edited examples new ids (then only they "
            f"are extracted), or delete {location} and rerun the features stage."
        )
    keep = np.ones(len(wanted), dtype=bool)
    keep[at] = False
    fresh = np.flatnonzero(keep)
    new = RowManifest(tuple(wanted.ids[i] for i in fresh), wanted.hashes[fresh])
    return Growth(n_old=len(stored), new=new, chunk_rows=chunk_rows)
