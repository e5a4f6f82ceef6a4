"""prefetch_chunks: same chunks as read_chunk, in order, at any depth; errors surface at their chunk."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from inflow.errors import StoreCorruptError
from inflow.store import GradientStore
from inflow.store.prefetch import prefetch_chunks
from tests.store.test_gradient_store import fill, make_attrs, rows


@pytest.fixture
def stores(tmp_path: Path) -> list[GradientStore]:
    out = []
    for k in range(2):
        store = GradientStore.create_or_open(tmp_path / f"g{k}.zarr", make_attrs(n_rows=18, chunk_rows=4))
        fill(store, rows(18, seed=k))
        out.append(store)
    return out


@pytest.mark.parametrize(("depth", "readers"), [(0, 1), (1, 1), (2, 1), (8, 1), (2, 2), (8, 3)])
def test_same_chunks_in_order(stores: list[GradientStore], depth: int, readers: int) -> None:
    got = list(prefetch_chunks(stores, range(stores[0].n_chunks), depth=depth, readers=readers))
    assert [c for c, _ in got] == list(range(5))
    for c, per_store in got:
        assert len(per_store) == 2
        for store, (feats, norms, ids) in zip(stores, per_store):
            ref_feats, ref_norms, ref_ids = store.read_chunk(c)
            np.testing.assert_array_equal(feats, ref_feats)
            np.testing.assert_array_equal(norms, ref_norms)
            assert ids == ref_ids


def test_reads_happen_off_the_calling_thread(stores: list[GradientStore], monkeypatch: pytest.MonkeyPatch) -> None:
    readers: set[str] = set()
    original = GradientStore.read_chunk

    def spy(self: GradientStore, i: int, verify: bool = True):  # type: ignore[no-untyped-def]
        readers.add(threading.current_thread().name)
        return original(self, i, verify)

    monkeypatch.setattr(GradientStore, "read_chunk", spy)
    list(prefetch_chunks(stores, range(5), depth=2))
    assert readers and all(name.startswith("inflow-prefetch") for name in readers)
    readers.clear()
    list(prefetch_chunks(stores, range(5), depth=0))
    assert readers == {threading.current_thread().name}


def test_corrupt_chunk_raises_at_its_turn(stores: list[GradientStore]) -> None:
    zarr.open_group(str(stores[1].path), mode="r+")["features"][9, 3] = 0.5  # chunk 2 of the second store
    seen = []
    with pytest.raises(StoreCorruptError, match="chunk 2"):
        for c, _ in prefetch_chunks(stores, range(5), depth=3):
            seen.append(c)
    assert seen == [0, 1]
    assert [c for c, _ in prefetch_chunks(stores, range(5), verify=False, depth=3)] == list(range(5))


def test_abandoned_iteration_and_bad_depth(stores: list[GradientStore]) -> None:
    for c, _ in prefetch_chunks(stores, range(5), depth=2):
        if c == 1:
            break  # the generator closes its reader thread; nothing hangs
    with pytest.raises(ValueError, match="depth must be >= 0"):
        list(prefetch_chunks(stores, range(5), depth=-1))
    with pytest.raises(ValueError, match="readers >= 1"):
        list(prefetch_chunks(stores, range(5), readers=0))
