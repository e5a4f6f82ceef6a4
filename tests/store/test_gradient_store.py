"""GradientStore: round trips, resume, attrs checks on reopen, corruption detection."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from inflow.errors import InflowError, StoreCorruptError, StoreMismatchError
from inflow.sketch import BlockSketch
from inflow.store import GradientStore, StoreAttrs

DIM = 16


def make_attrs(**overrides: object) -> StoreAttrs:
    values: dict[str, object] = dict(
        model_id="models/tiny", model_hash="abc123", checkpoint="checkpoint-10", checkpoint_step=10,
        lora_targets=("q_proj", "v_proj"), feature_kind="adam",
        sketch=BlockSketch("hadamard", 0, [40, 30], DIM).to_attrs(), dim=DIM, dtype="float16",
        n_rows=10, chunk_rows=4, data_hash="d0", code_version="0.1.0",
    )
    values.update(overrides)
    return StoreAttrs(**values)  # type: ignore[arg-type]


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)) * 3.0


def fill(store: GradientStore, data: np.ndarray, chunks: list[int] | None = None) -> list[str]:
    ids = [f"ex-{i}-ü" for i in range(store.attrs.n_rows)]
    for i in range(store.n_chunks) if chunks is None else chunks:
        start, stop = store.chunk_bounds(i)
        store.write_chunk(i, data[start:stop], ids[start:stop])
    return ids


@pytest.mark.parametrize(("dtype", "rtol"), [("float16", 1e-3), ("float32", 1e-6)])
def test_round_trip(tmp_path: Path, dtype: str, rtol: float) -> None:
    data = rows(10)
    data[5] = 0.0
    store = GradientStore.create_or_open(tmp_path / "g.zarr", make_attrs(dtype=dtype))
    assert store.n_chunks == 3 and store.chunk_bounds(2) == (8, 10)  # last chunk partial
    ids = fill(store, data)
    reopened = GradientStore.open(tmp_path / "g.zarr")
    assert reopened.is_complete() and reopened.example_ids() == ids
    unit = reopened.read_all()
    assert unit.dtype == np.float32 and unit.shape == (10, DIM)
    norms = np.linalg.norm(unit, axis=1)
    np.testing.assert_allclose(np.delete(norms, 5), 1.0, rtol=2 * rtol)
    assert norms[5] == 0.0 and reopened.norms()[5] == 0.0
    np.testing.assert_allclose(reopened.norms(), np.linalg.norm(data, axis=1), rtol=1e-6)
    np.testing.assert_allclose(reopened.read_all(raw=True), data, rtol=rtol, atol=rtol * 3)
    starts = [start for start, *_ in reopened.iter_chunks()]
    assert starts == [0, 4, 8]


def test_tensor_input_and_idempotent_rewrite(tmp_path: Path) -> None:
    store = GradientStore.create_or_open(tmp_path / "g.zarr", make_attrs(dtype="float32"))
    fill(store, rows(10))
    store.write_chunk(1, torch.ones(4, DIM, dtype=torch.float64), ["a", "b", "c", "d"])
    features, norms, ids = store.read_chunk(1)
    np.testing.assert_allclose(features, 0.25)
    np.testing.assert_allclose(norms, 4.0)
    assert ids == ["a", "b", "c", "d"] and store.is_complete()


def test_pending_chunks_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = GradientStore.create_or_open(path, make_attrs())
    fill(store, rows(10), chunks=[0])
    again = GradientStore.create_or_open(path, make_attrs())
    assert again.pending_chunks() == [1, 2] and not again.is_complete()
    with pytest.raises(StoreCorruptError, match="chunk 1 .* not written yet"):
        again.read_chunk(1)
    with pytest.raises(StoreCorruptError, match="incomplete: 2 of 3 chunks pending"):
        list(again.iter_chunks())
    fill(again, rows(10), chunks=[2, 1])
    assert GradientStore.open(path).is_complete()


def test_reopen_with_other_settings_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "g.zarr"
    GradientStore.create_or_open(path, make_attrs())
    other = make_attrs(sketch=BlockSketch("hadamard", 1, [40, 30], DIM).to_attrs(), dtype="float32")
    with pytest.raises(StoreMismatchError) as info:
        GradientStore.create_or_open(path, other)
    message = str(info.value)
    assert "sketch.seed: 0 in the store, 1 asked for now" in message and "dtype" in message
    assert str(path) in message and "Rerun the features stage" in message
    assert info.value.problems and all("asked for now" in line for line in info.value.problems)
    with caplog.at_level(logging.INFO):  # another package version, same feature format: reused, and said so
        GradientStore.create_or_open(path, make_attrs(code_version="0.2.0"))
    assert "0.2.0" in caplog.text
    with pytest.raises(StoreMismatchError, match="feature_format: 1 in the store, 2 asked for now"):
        GradientStore.create_or_open(path, make_attrs(feature_format=2))  # other feature code: never reused


def test_tampered_values_fail_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = GradientStore.create_or_open(path, make_attrs())
    fill(store, rows(10))
    zarr.open_group(str(path), mode="r+")["features"][5, 3] = 0.5  # chunk 1, checksum left as it was
    store.read_chunk(0)
    with pytest.raises(StoreCorruptError, match=f"chunk 1 \\(rows 4..7\\) of the gradient store at {path}"):
        store.read_chunk(1)
    store.read_chunk(1, verify=False)
    with pytest.raises(StoreCorruptError, match="chunk 1"):
        store.read_all()
    store.invalidate_chunk(1)
    assert store.pending_chunks() == [1]


def test_edited_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = GradientStore.create_or_open(path, make_attrs())
    fill(store, rows(10))
    chunk_file = path / "norms" / "c" / "2"
    data = bytearray(chunk_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="chunk 2"):
        store.read_chunk(2)


def test_zero_rows_and_empty_store(tmp_path: Path) -> None:
    store = GradientStore.create_or_open(tmp_path / "z.zarr", make_attrs(n_rows=3, chunk_rows=8))
    store.write_chunk(0, np.zeros((3, DIM)), ["a", "b", "c"])
    features, norms, _ = store.read_chunk(0)
    assert not features.any() and not norms.any()
    empty = GradientStore.create_or_open(tmp_path / "e.zarr", make_attrs(n_rows=0))
    assert empty.n_chunks == 0 and empty.is_complete() and empty.read_all().shape == (0, DIM)


def test_bad_writes_and_paths_are_clear_errors(tmp_path: Path) -> None:
    store = GradientStore.create_or_open(tmp_path / "g.zarr", make_attrs())
    with pytest.raises(ValueError, match="expected features \\[4, 16\\]"):
        store.write_chunk(0, rows(3), ["a", "b", "c"])
    bad = rows(4)
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match="rows \\[2\\] have non-finite"):
        store.write_chunk(0, bad, list("abcd"))
    with pytest.raises(InflowError, match="read-only"):
        GradientStore.open(tmp_path / "g.zarr").write_chunk(0, rows(4), list("abcd"))
    with pytest.raises(InflowError, match="no gradient store"):
        GradientStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(InflowError, match="not a gradient store"):
        GradientStore.create_or_open(tmp_path / "plain", make_attrs())


def test_fsspec_url(tmp_path: Path) -> None:
    url = f"memory://{tmp_path.name}/g.zarr"
    store = GradientStore.create_or_open(url, make_attrs())
    ids = fill(store, rows(10))
    assert GradientStore.open(url).example_ids() == ids


def test_undecodable_chunk_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = GradientStore.create_or_open(path, make_attrs())
    fill(store, rows(10))
    (path / "features" / "c" / "1" / "0").write_bytes(b"not a blosc frame")
    with pytest.raises(StoreCorruptError, match="chunk 1 .* cannot be read"):
        store.read_chunk(1)
