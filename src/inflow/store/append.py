"""Growing a gradient store when its data grows: new rows are appended, only they are extracted.

Zarr arrays have a regular chunk grid, and a store chunk is exactly one Zarr chunk of every array, so the rows
appended to a store whose last chunk is partial (``n_rows % chunk_rows != 0``) land in that chunk first. That chunk
is *reopened*: marked pending and extracted again as a whole (its old rows with the new ones). We chose this over
keeping its old rows and computing only the new ones because a row's features depend, at the level of float
rounding, on the batch it was computed in (padding length, kernel blocking); re-extracting the chunk as a whole
makes a grown store bit-identical to one built from scratch on the grown data, which is what resumes, DVC caches
and teammates' rebuilds rely on. The cost is at most ``chunk_rows - 1`` recomputed rows per growth. Complete chunks
are never touched: their bytes, checksums and done marks stay as they are.

Order of writes (the parent does this once, before any worker starts; never grow while workers write):

1. ``done[reopened] = False``: from here on a crash leaves the store valid at its old size, that chunk pending;
2. every array is resized to the new row (and chunk) count; new chunks read as pending (``done`` fills False);
3. the new rows' ids and content hashes are written;
4. the caller writes the attrs with the new ``n_rows`` and ``data_hash``: this commits the growth.

A crash between 2 and 4 leaves arrays longer than the attrs say; reopening to grow accepts that and resizes them to
whatever is asked for then (a read-only open reports it and says to rerun the features stage).
"""

from __future__ import annotations

import logging

import numpy as np
import zarr

from inflow.errors import StoreMismatchError
from inflow.store.attrs import StoreAttrs
from inflow.store.rows import RowManifest, plan_growth

logger = logging.getLogger(__name__)

ROW_ARRAYS = ("features", "example_id", "row_hash", "norms")  # one entry (row) per example
CHUNK_ARRAYS = ("done", "checksum")  # one entry per store chunk


def stored_rows(group: zarr.Group, attrs: StoreAttrs) -> RowManifest:
    """The row manifest of the first ``attrs.n_rows`` rows of an open store group."""
    n = attrs.n_rows
    ids = tuple(str(x) for x in group["example_id"][:n]) if n else ()
    return RowManifest(ids, np.asarray(group["row_hash"][:n]) if n else np.zeros(0, dtype=np.uint64))


def grow_arrays(group: zarr.Group, location: str, attrs: StoreAttrs, wanted: RowManifest) -> StoreAttrs:
    """Steps 1-3 of a growth (module docstring) for the rows ``wanted``; returns the attrs to commit.

    Returns ``attrs`` unchanged when nothing is new. Raises :class:`StoreMismatchError` when the store records no
    row manifest (built without ``rows``), or when a stored row changed or is missing from ``wanted``.
    """
    stored = stored_rows(group, attrs)
    if stored.digest() != attrs.data_hash:
        raise StoreMismatchError(
            f"the gradient store at {location} records no row manifest matching its data_hash (it was created "
            "without rows=, or its example_id/row_hash arrays were edited), so its rows cannot be checked or "
            f"extended: delete {location} and rerun the features stage."
        )
    growth = plan_growth(stored, wanted, attrs.chunk_rows, location)
    n_chunks = -(-growth.n_rows // attrs.chunk_rows)
    if not len(growth.new) and _sizes(group) == (attrs.n_rows, attrs.n_chunks):
        return attrs
    if growth.reopened is not None:
        group["done"][growth.reopened] = False  # first: a crash from here on leaves that chunk pending
    for name in ROW_ARRAYS:
        array = group[name]
        array.resize((growth.n_rows, *array.shape[1:]))
    for name in CHUNK_ARRAYS:
        group[name].resize((n_chunks,))
    if len(growth.new):
        group["example_id"][growth.n_old:] = np.array(growth.new.ids, dtype=object)
        group["row_hash"][growth.n_old:] = growth.new.hashes
        logger.info("gradient store at %s grows from %d to %d rows (%d new%s)", location, growth.n_old,
                    growth.n_rows, len(growth.new),
                    "" if growth.reopened is None else f"; chunk {growth.reopened} is extracted again")
    return attrs.with_rows(growth.n_rows, stored.concat(growth.new).digest())


def _sizes(group: zarr.Group) -> tuple[int, int]:
    """(rows, chunks) the arrays hold now; (-1, -1) when they disagree (a growth was interrupted)."""
    rows = {group[name].shape[0] for name in ROW_ARRAYS}
    chunks = {group[name].shape[0] for name in CHUNK_ARRAYS}
    return (rows.pop(), chunks.pop()) if len(rows) == len(chunks) == 1 else (-1, -1)
