"""Growing a store with its data: row manifests, growth plans, the reopened partial chunk, interrupted growth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from inflow.errors import StoreCorruptError, StoreMismatchError
from inflow.sketch import BlockSketch
from inflow.store import GradientStore, RowManifest, StoreAttrs, plan_growth, row_hash
from inflow.store.append import grow_arrays

DIM = 16
CHUNK = 4


def manifest(n: int, edited: dict[int, str] | None = None) -> RowManifest:
    """Rows ex-0..ex-(n-1); ``edited`` replaces the content of some rows."""
    edited = edited or {}
    ids = [f"ex-{i}" for i in range(n)]
    return RowManifest.build(ids, [row_hash(x, edited.get(i, f"text {i}").encode()) for i, x in enumerate(ids)])


def attrs_for(rows: RowManifest, **overrides: object) -> StoreAttrs:
    values: dict[str, object] = dict(
        model_id="models/tiny", model_hash="abc123", checkpoint="checkpoint-10", checkpoint_step=10,
        lora_targets=("q_proj", "v_proj"), feature_kind="adam",
        sketch=BlockSketch("hadamard", 0, [40, 30], DIM).to_attrs(), dim=DIM, dtype="float16",
        n_rows=len(rows), chunk_rows=CHUNK, data_hash=rows.digest(), code_version="0.1.0",
    )
    values.update(overrides)
    return StoreAttrs(**values)  # type: ignore[arg-type]


def features(rows: RowManifest) -> np.ndarray:
    """Deterministic raw features per id, so a row's value does not depend on where it sits."""
    return np.stack([np.random.default_rng(int(h) % 2**32).normal(size=DIM) for h in rows.hashes])


def open_rows(path: Path, rows: RowManifest) -> GradientStore:
    return GradientStore.create_or_open(path, attrs_for(rows), rows)


def fill(store: GradientStore) -> None:
    for i in store.pending_chunks():
        rows = store.rows(i)
        store.write_chunk(i, features(rows), rows.ids)


def raw_chunks(path: Path, name: str) -> dict[str, bytes]:
    return {str(f.relative_to(path / name)): f.read_bytes() for f in sorted((path / name).rglob("*")) if f.is_file()
            and f.name != "zarr.json"}


def test_plan_growth_appends_new_rows_and_reopens_the_partial_chunk() -> None:
    growth = plan_growth(manifest(10), manifest(15), CHUNK, "g.zarr")
    assert growth.n_old == 10 and growth.n_rows == 15 and growth.reopened == 2
    assert growth.new.ids == tuple(f"ex-{i}" for i in range(10, 15))
    assert plan_growth(manifest(8), manifest(15), CHUNK, "g.zarr").reopened is None  # 8 rows: whole chunks
    assert plan_growth(manifest(10), manifest(10), CHUNK, "g.zarr").reopened is None  # nothing new
    old, now = manifest(6), manifest(8)
    shuffled = RowManifest.build([now.ids[i] for i in (7, 2, 0, 6, 1, 3, 5, 4)],
                                 [now.hashes[i] for i in (7, 2, 0, 6, 1, 3, 5, 4)])
    assert plan_growth(old, shuffled, CHUNK, "g.zarr").new.ids == ("ex-7", "ex-6")  # in the order asked for


def test_changed_or_removed_rows_and_repeated_ids_are_refused() -> None:
    with pytest.raises(StoreMismatchError, match=r"1 rows .* changed content under the same example_id "
                                                 r"\(first: \['ex-3'\]\).*new ids"):
        plan_growth(manifest(10), manifest(12, edited={3: "edited"}), CHUNK, "g.zarr")
    with pytest.raises(StoreMismatchError, match=r"holds 2 rows that are no longer in the data \(first: "
                                                 r"\['ex-8', 'ex-9'\]\).*only grows.*delete g.zarr"):
        plan_growth(manifest(10), manifest(8), CHUNK, "g.zarr")
    with pytest.raises(ValueError, match=r"example ids repeat \(\['a'\]\)"):
        RowManifest.build(["a", "b", "a"], [1, 2, 3])


def test_store_grows_and_keeps_complete_chunks_untouched(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = open_rows(path, manifest(10))
    assert store.pending_chunks() == [0, 1, 2] and store.rows().ids == manifest(10).ids  # ids recorded up front
    fill(store)
    before = {name: raw_chunks(path, name) for name in ("features", "norms", "example_id", "checksum")}
    grown = open_rows(path, manifest(15))
    assert grown.attrs.n_rows == 15 and grown.attrs.data_hash == manifest(15).digest()
    assert grown.pending_chunks() == [2, 3]  # the partial chunk 2 (rows 8..9 -> 8..11) and the new chunk 3
    after = {name: raw_chunks(path, name) for name in before}
    for name in ("features", "norms", "example_id", "checksum"):  # chunks 0 and 1, byte for byte
        complete = {k: v for k, v in before[name].items() if k.split("/")[1] in ("0", "1")}
        assert len(complete) == 2 and all(after[name][k] == v for k, v in complete.items()), name
    fill(grown)
    scratch = open_rows(tmp_path / "scratch.zarr", manifest(15))
    fill(scratch)
    again = GradientStore.open(path)
    assert again.example_ids() == scratch.example_ids()
    np.testing.assert_array_equal(again.read_all(), scratch.read_all())
    assert open_rows(path, manifest(15)).pending_chunks() == []  # same rows again: nothing to do


def test_reordered_subset_needs_no_work(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    fill(open_rows(path, manifest(10)))
    rows = manifest(10)
    order = [9, 0, 5, 1, 2, 3, 4, 6, 7, 8]
    shuffled = RowManifest.build([rows.ids[i] for i in order], rows.hashes[order])
    store = open_rows(path, shuffled)
    assert store.pending_chunks() == [] and store.example_ids() == list(rows.ids)  # stored order is kept


def test_refusals_leave_the_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    fill(open_rows(path, manifest(10)))
    with pytest.raises(StoreMismatchError, match="changed content"):
        open_rows(path, manifest(12, edited={0: "new text"}))
    with pytest.raises(StoreMismatchError, match="no longer in the data"):
        open_rows(path, manifest(9))
    other, sketch = manifest(12), BlockSketch("hadamard", 1, [40, 30], DIM).to_attrs()
    with pytest.raises(StoreMismatchError, match="sketch.seed: 0 in the store, 1 asked for now"):
        GradientStore.create_or_open(path, attrs_for(other, sketch=sketch), other)
    store = GradientStore.open(path)
    assert store.attrs.n_rows == 10 and store.is_complete()
    with pytest.raises(ValueError, match="with_rows"):
        GradientStore.create_or_open(path, attrs_for(manifest(10)), manifest(11))


def test_interrupted_growth_is_finished_or_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = open_rows(path, manifest(10))
    fill(store)
    # a growth killed after resizing the arrays, before its attrs were committed
    grow_arrays(zarr.open_group(str(path), mode="r+"), str(path), store.attrs, manifest(15))
    with pytest.raises(StoreCorruptError, match="rerun the features stage \\(it finishes the growth\\)"):
        GradientStore.open(path)
    rolled_back = open_rows(path, manifest(10))  # the pool went back to 10 rows
    assert rolled_back.attrs.n_rows == 10 and rolled_back.pending_chunks() == [2]
    fill(rolled_back)
    grow_arrays(zarr.open_group(str(path), mode="r+"), str(path), rolled_back.attrs, manifest(15))
    finished = open_rows(path, manifest(17))
    assert finished.attrs.n_rows == 17 and finished.pending_chunks() == [2, 3, 4]
    fill(finished)
    assert GradientStore.open(path).example_ids() == list(manifest(17).ids)


def test_store_without_manifest_stays_fixed_size(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    legacy = attrs_for(manifest(10), data_hash="d0")
    store = GradientStore.create_or_open(path, legacy)
    fill_ids = [f"ex-{i}" for i in range(10)]
    for i in range(store.n_chunks):
        start, stop = store.chunk_bounds(i)
        store.write_chunk(i, np.ones((stop - start, DIM)), fill_ids[start:stop])
    assert store.rows().hashes.tolist() == [0] * 10  # no content recorded
    with pytest.raises(StoreMismatchError, match="n_rows: 10 in the store, 12 asked for now"):
        GradientStore.create_or_open(path, attrs_for(manifest(12), data_hash="d0"))
    with pytest.raises(StoreMismatchError, match="records no row manifest"):
        open_rows(path, manifest(12))


def test_settings_diff_ignores_rows() -> None:
    a, b = attrs_for(manifest(10)), attrs_for(manifest(12))
    assert a.settings_diff(b) == [] and len(a.blocking_diff(b)) == 2
    assert a.with_rows(12, b.data_hash) == b
    assert a.settings_diff(attrs_for(manifest(10), chunk_rows=8)) == ["chunk_rows: 4 here, 8 there"]
