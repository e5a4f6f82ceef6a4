"""The Zarr (v3) gradient store: unit-normalised feature rows in chunks, with done marks, checksums and attrs.

One group per (selector model, checkpoint, split)::

    features    float16|float32 [n_rows, dim]  chunks (chunk_rows, dim), Blosc-zstd with byte shuffle
    example_id  string [n_rows]                chunks (chunk_rows,)
    row_hash    uint64 [n_rows]                chunks (chunk_rows,): content hash of each row (0: not recorded)
    norms       float32 [n_rows]               chunks (chunk_rows,): ||row|| before normalisation
    done        bool [n_chunks]                chunks (1,): set last, after the chunk's checksum
    checksum    uint64 [n_chunks]              chunks (1,): blake2b-64 of the chunk as stored
    attrs       {"inflow_store": StoreAttrs, "inflow_store_format": 2}  (written last on creation and growth)

Store chunk ``i`` is rows ``[i * chunk_rows, min((i+1) * chunk_rows, n_rows))`` and maps to exactly one Zarr chunk
(one file or object) of every array, so workers writing different chunks never touch the same file. A write
clears ``done[i]``, writes the rows, reads them back to checksum what is actually stored, then sets
``checksum[i]`` and finally ``done[i]``: a chunk marked done is complete (the manifest-last rule), and a killed
writer leaves it pending, to be redone on resume. Rows are stored unit-normalised with their norms (raw features
are ``features * norms[:, None]``): LESS needs only cosines, and fp16 keeps full relative precision on unit rows.

Rows: ``create_or_open(path, attrs, rows)`` with a :class:`~inflow.store.rows.RowManifest` records every row's id
and content hash up front, and reopening it with more rows grows the store (``store/append.py``): only the new
rows (and the partial last chunk) become pending. Without a manifest the store is fixed-size: its ids come from
``write_chunk`` and a reopen must ask for the same ``n_rows`` and ``data_hash``.

Paths: a local directory, or an fsspec URL (``s3://...``, ``memory://...``) that zarr opens directly. Create (or
grow) the store once before fanning out (``create_or_open`` in the parent), then let workers ``open`` it writable
and write their chunks: never grow a store while workers write to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec

from inflow.errors import InflowError, StoreCorruptError, StoreMismatchError
from inflow.store.append import grow_arrays
from inflow.store.attrs import StoreAttrs
from inflow.store.rows import RowManifest

logger = logging.getLogger(__name__)

ATTRS_KEY = "inflow_store"
FORMAT_KEY = "inflow_store_format"
FORMAT = 2  # 2: row_hash array, growable stores
ARRAYS = ("features", "example_id", "row_hash", "norms", "done", "checksum")


def _location(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return text if "://" in text else str(Path(text))


def _is_url(location: str) -> bool:
    return "://" in location


def chunk_digest(start: int, stop: int, features: np.ndarray, norms: np.ndarray, ids: Sequence[str]) -> int:
    """blake2b-64 of a chunk as stored: rows ``start..stop``, feature bytes (stored dtype, little-endian), norms, ids.

    ``features [rows, dim]`` float16/float32, ``norms [rows]`` float32, ids as length-prefixed UTF-8.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(struct.pack("<qq", start, stop))
    h.update(np.ascontiguousarray(features, dtype=features.dtype.newbyteorder("<")).tobytes())
    h.update(np.ascontiguousarray(norms, dtype="<f4").tobytes())
    for example_id in ids:
        data = str(example_id).encode("utf-8")
        h.update(struct.pack("<I", len(data)))
        h.update(data)
    return int.from_bytes(h.digest(), "little")


class GradientStore:
    """A gradient store on disk (see the module docstring). Build with :meth:`create_or_open` or :meth:`open`."""

    def __init__(self, location: str, group: zarr.Group, attrs: StoreAttrs, writable: bool) -> None:
        self.location = location
        self.writable = writable
        self._group = group
        self._attrs = attrs
        arrays = {name: group[name] for name in ARRAYS}
        self._features: zarr.Array = arrays["features"]  # type: ignore[assignment]
        self._ids: zarr.Array = arrays["example_id"]  # type: ignore[assignment]
        self._row_hash: zarr.Array = arrays["row_hash"]  # type: ignore[assignment]
        self._norms: zarr.Array = arrays["norms"]  # type: ignore[assignment]
        self._done: zarr.Array = arrays["done"]  # type: ignore[assignment]
        self._checksum: zarr.Array = arrays["checksum"]  # type: ignore[assignment]

    # ----------------------------------------------------------------------------------------------- opening
    @classmethod
    def create_or_open(cls, path: str | os.PathLike[str], attrs: StoreAttrs,
                       rows: RowManifest | None = None) -> GradientStore:
        """Open the store at ``path`` for writing, creating it from ``attrs`` (and ``rows``) if absent.

        An existing store must have been built with the same settings (``code_version`` aside, which only warns),
        else :class:`StoreMismatchError` lists every difference and the fix. With ``rows`` (and
        ``attrs = attrs.with_rows(len(rows), rows.digest())``) the store records every row's id and content hash
        and grows to hold new ones: rows it holds must be asked for again, unchanged, in any order
        (:func:`~inflow.store.rows.plan_growth`); new rows are appended and pending. Without ``rows`` the store is
        fixed-size and ``n_rows`` and ``data_hash`` must match too.
        """
        location = _location(path)
        if rows is not None and (attrs.n_rows, attrs.data_hash) != (len(rows), rows.digest()):
            raise ValueError("attrs describe other rows than `rows`: pass attrs.with_rows(len(rows), rows.digest())")
        group = _try_open(location, "r+")
        if group is None:
            if not _is_url(location) and Path(location).exists() and any(Path(location).iterdir()):
                raise InflowError(f"{location} exists and is not a gradient store: choose another output path or "
                                  "delete it")
            try:
                return cls(location, _create(location, attrs, rows), attrs, writable=True)
            except FileExistsError:  # another process created it between our open and create: use theirs
                group = zarr.open_group(location, mode="r+")
        stored = _read_attrs(group, location)
        labels = ("in the store", "asked for now")
        problems = stored.blocking_diff(attrs, labels) if rows is None else stored.settings_diff(attrs, labels)
        if problems:
            raise StoreMismatchError(
                f"the gradient store at {location} was built from other inputs or settings: "
                f"{'; '.join(problems)}. Rerun the features stage (dvc repro rebuilds it), or delete {location} "
                "(or write to another path) before resuming by hand, or restore what it was built from.",
                problems,
            )
        if stored.code_version != attrs.code_version:
            logger.info("gradient store at %s was written by inflow %s, this is %s (same feature format %d): "
                        "reusing its features", location, stored.code_version, attrs.code_version,
                        stored.feature_format)
        _check_arrays(group, stored, location, growing=rows is not None)
        if rows is not None:
            grown = grow_arrays(group, location, stored, rows)
            if grown != stored:
                group.attrs.update({ATTRS_KEY: grown.to_dict()})  # last: commits the growth
                stored = grown
            group = zarr.open_group(location, mode="r+")  # the arrays' new shapes
        return cls(location, group, stored, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> GradientStore:
        """Open an existing store (read-only unless ``writable``); its attrs come from the store."""
        location = _location(path)
        group = _try_open(location, "r+" if writable else "r")
        if group is None:
            raise InflowError(f"no gradient store at {location}: run the features stage first, or fix the path")
        attrs = _read_attrs(group, location)
        _check_arrays(group, attrs, location)
        return cls(location, group, attrs, writable=writable)

    # ----------------------------------------------------------------------------------------------- layout
    @property
    def path(self) -> str:
        """Where the store lives (a local path or an fsspec URL); same as ``location``."""
        return self.location

    @property
    def attrs(self) -> StoreAttrs:
        """The attrs the store was built with."""
        return self._attrs

    @property
    def n_chunks(self) -> int:
        """``ceil(n_rows / chunk_rows)``."""
        return self._attrs.n_chunks

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Rows ``(start, stop)`` of chunk ``i``."""
        if not 0 <= i < self.n_chunks:
            raise IndexError(f"chunk {i} out of range: the store at {self.location} has {self.n_chunks} chunks")
        start = i * self._attrs.chunk_rows
        return start, min(start + self._attrs.chunk_rows, self._attrs.n_rows)

    def pending_chunks(self) -> list[int]:
        """Indices of the chunks not yet marked done, in order."""
        return np.flatnonzero(~np.asarray(self._done[:], dtype=bool)).tolist()

    def is_complete(self) -> bool:
        """Whether every chunk is done."""
        return not self.pending_chunks()

    def rows(self, chunk: int | None = None) -> RowManifest:
        """Ids and content hashes of chunk ``chunk``'s rows, or of all rows (pending ones included).

        Exact for a store built with a row manifest; in one built without, unwritten ids are ``""`` and every
        hash is 0.
        """
        start, stop = (0, self._attrs.n_rows) if chunk is None else self.chunk_bounds(chunk)
        return RowManifest(tuple(str(x) for x in self._ids[start:stop]), np.asarray(self._row_hash[start:stop]))

    # ----------------------------------------------------------------------------------------------- writing
    def write_chunk(self, i: int, features: np.ndarray | torch.Tensor, example_ids: Sequence[str]) -> None:
        """Store chunk ``i``: raw projected ``features [rows, dim]`` (float32/64) and their example ids.

        Writes ``u = x / ||x||`` (zero rows stay zero, norm 0) in the store dtype and ``||x||`` as float32, reads the
        chunk back, checksums it, and only then marks it done. Rewriting a done chunk is allowed (idempotent).
        """
        self._require_writable()
        start, stop = self.chunk_bounds(i)
        raw = _as_float64(features)
        ids = list(example_ids)
        if raw.shape != (stop - start, self._attrs.dim) or len(ids) != stop - start:
            raise ValueError(f"chunk {i} holds rows {start}..{stop - 1}: expected features "
                             f"[{stop - start}, {self._attrs.dim}] and {stop - start} ids, got "
                             f"{list(raw.shape)} and {len(ids)}")
        bad = np.flatnonzero(~np.isfinite(raw).all(axis=1))
        if bad.size:
            raise ValueError(f"chunk {i}: rows {(bad[:5] + start).tolist()} have non-finite features "
                             "(overflowing gradients? try features in float32 or a smaller learning rate)")
        norms = np.linalg.norm(raw, axis=1)
        unit = raw / np.where(norms > 0, norms, 1.0)[:, None]
        self._done[i] = False  # a crash from here on leaves the chunk pending
        self._features[start:stop] = unit.astype(self._attrs.dtype)
        self._ids[start:stop] = np.array([str(x) for x in ids], dtype=object)
        self._norms[start:stop] = norms.astype(np.float32)
        stored = self._read_rows(i)
        self._checksum[i] = np.uint64(chunk_digest(start, stop, *stored))
        self._done[i] = True

    def invalidate_chunk(self, i: int) -> None:
        """Mark chunk ``i`` pending again, so a resumed features stage recomputes it (e.g. after a failed checksum)."""
        self._require_writable()
        self.chunk_bounds(i)
        self._done[i] = False

    # ----------------------------------------------------------------------------------------------- reading
    def read_chunk(self, i: int, verify: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Chunk ``i``: unit rows float32 [rows, dim], norms float32 [rows], example ids.

        ``verify`` recomputes the checksum; a mismatch (or an unreadable chunk) raises :class:`StoreCorruptError`.
        """
        start, stop = self.chunk_bounds(i)
        if not bool(self._done[i]):
            raise StoreCorruptError(f"chunk {i} (rows {start}..{stop - 1}) of the gradient store at {self.location} "
                                    "is not written yet: rerun the features stage to finish the store")
        features, norms, ids = self._read_rows(i)
        if verify and chunk_digest(start, stop, features, norms, ids) != int(self._checksum[i]):
            raise StoreCorruptError(
                f"chunk {i} (rows {start}..{stop - 1}) of the gradient store at {self.location} fails its checksum: "
                "its files changed after they were written. Recompute it (GradientStore.invalidate_chunk, then "
                "rerun the features stage) or delete the store and rerun the features stage."
            )
        return features.astype(np.float32, copy=False), norms, ids

    def iter_chunks(self, verify: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray, list[str]]]:
        """Yield ``(start, features [rows, dim], norms [rows], ids)`` per chunk, in order (see :meth:`read_chunk`)."""
        self._require_complete()
        for i in range(self.n_chunks):
            features, norms, ids = self.read_chunk(i, verify)
            yield self.chunk_bounds(i)[0], features, norms, ids

    def read_all(self, raw: bool = False, verify: bool = True) -> np.ndarray:
        """All rows, float32 [n_rows, dim]: unit rows, or raw features ``u * norm`` when ``raw``."""
        parts = [f * n[:, None] if raw else f for _, f, n, _ in self.iter_chunks(verify)]
        return np.concatenate(parts) if parts else np.zeros((0, self._attrs.dim), dtype=np.float32)

    def example_ids(self) -> list[str]:
        """The example ids of all rows, in row order."""
        self._require_complete()
        return [str(x) for x in self._ids[:]]

    def norms(self) -> np.ndarray:
        """float32 [n_rows]: the norms of the raw rows."""
        self._require_complete()
        return np.asarray(self._norms[:], dtype=np.float32)

    # ----------------------------------------------------------------------------------------------- helpers
    def _read_rows(self, i: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        start, stop = self.chunk_bounds(i)
        try:
            features = np.asarray(self._features[start:stop])
            norms = np.asarray(self._norms[start:stop], dtype=np.float32)
            ids = [str(x) for x in self._ids[start:stop]]
        except Exception as exc:  # a damaged compressed chunk fails to decode with codec-specific errors
            raise StoreCorruptError(
                f"chunk {i} (rows {start}..{stop - 1}) of the gradient store at {self.location} cannot be read "
                f"({type(exc).__name__}: {exc}): delete the store and rerun the features stage"
            ) from exc
        return features, norms, ids

    def _require_writable(self) -> None:
        if not self.writable:
            raise InflowError(f"the gradient store at {self.location} was opened read-only: use "
                              "GradientStore.open(path, writable=True) or GradientStore.create_or_open")

    def _require_complete(self) -> None:
        pending = self.pending_chunks()
        if pending:
            raise StoreCorruptError(
                f"the gradient store at {self.location} is incomplete: {len(pending)} of {self.n_chunks} chunks "
                f"pending (first: {pending[:5]}): rerun the features stage to finish it"
            )


def _as_float64(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    return np.asarray(features, dtype=np.float64)


def _try_open(location: str, mode: str) -> zarr.Group | None:
    try:
        return zarr.open_group(location, mode=mode)  # type: ignore[arg-type]
    except FileNotFoundError:  # also zarr's GroupNotFoundError: nothing there, or not a Zarr group
        return None


def _create(location: str, attrs: StoreAttrs, rows: RowManifest | None) -> zarr.Group:
    """A new group with empty arrays (and the row manifest); attrs are written last, so a half-created store is
    recognisable."""
    group = zarr.open_group(location, mode="w-")
    n, dim, chunk = attrs.n_rows, attrs.dim, attrs.chunk_rows
    dense: dict[str, Any] = {"config": {"write_empty_chunks": True}}
    group.create_array("features", shape=(n, dim), chunks=(chunk, dim), dtype=attrs.dtype, fill_value=0,
                       compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), **dense)
    group.create_array("example_id", shape=(n,), chunks=(chunk,), dtype=str, **dense)
    group.create_array("row_hash", shape=(n,), chunks=(chunk,), dtype="uint64", fill_value=0, **dense)
    group.create_array("norms", shape=(n,), chunks=(chunk,), dtype="float32", fill_value=0, **dense)
    group.create_array("done", shape=(attrs.n_chunks,), chunks=(1,), dtype="bool", fill_value=False)
    group.create_array("checksum", shape=(attrs.n_chunks,), chunks=(1,), dtype="uint64", fill_value=0)
    if rows is not None and n:
        group["example_id"][:] = np.array(rows.ids, dtype=object)
        group["row_hash"][:] = rows.hashes
    group.attrs.update({ATTRS_KEY: attrs.to_dict(), FORMAT_KEY: FORMAT})
    return group


def _read_attrs(group: zarr.Group, location: str) -> StoreAttrs:
    data = group.attrs.asdict()
    if ATTRS_KEY not in data:
        raise StoreCorruptError(f"{location} is a Zarr group without gradient-store attrs (its creation was "
                                "interrupted, or another tool wrote it): delete it and rerun the features stage")
    if data.get(FORMAT_KEY) != FORMAT:
        raise StoreMismatchError(f"the gradient store at {location} has format {data.get(FORMAT_KEY)}, this code "
                                 f"reads format {FORMAT}: delete {location} and rerun the features stage")
    try:
        return StoreAttrs.from_dict(dict(data[ATTRS_KEY]))
    except (TypeError, ValueError) as exc:
        raise StoreCorruptError(f"the gradient store at {location} has unreadable attrs ({exc}): delete it and "
                                "rerun the features stage") from exc


def _check_arrays(group: zarr.Group, attrs: StoreAttrs, location: str, growing: bool = False) -> None:
    """Every array present with the shape and dtype ``attrs`` imply. ``growing`` (a reopen that may grow the store)
    also accepts longer arrays: a growth killed before its attrs were written leaves them, and growing again
    resizes them to the rows asked for."""
    expected = {"features": ((attrs.n_rows, attrs.dim), attrs.dtype), "example_id": ((attrs.n_rows,), None),
                "row_hash": ((attrs.n_rows,), "uint64"), "norms": ((attrs.n_rows,), "float32"),
                "done": ((attrs.n_chunks,), "bool"), "checksum": ((attrs.n_chunks,), "uint64")}
    members = set(group.array_keys())
    for name, (shape, dtype) in expected.items():
        problem = ""
        if name not in members:
            problem = "is missing"
        else:
            array = group[name]
            found = tuple(array.shape)
            fits = found == shape or (growing and len(found) == len(shape) and found[0] >= shape[0]
                                      and found[1:] == shape[1:])
            if not fits or (dtype is not None and np.dtype(array.dtype) != np.dtype(dtype)):
                problem = f"has shape {found} and dtype {array.dtype}, expected {shape} and {dtype}"
        if problem:
            raise StoreCorruptError(f"the gradient store at {location}: array '{name}' {problem}. If a features run "
                                    "that was growing this store was killed, rerun the features stage (it finishes "
                                    f"the growth); otherwise delete {location} and rerun the features stage")
