"""StoreAttrs: validation, JSON round trip, readable differences."""

from __future__ import annotations

import dataclasses

import pytest

from inflow.sketch import BlockSketch
from inflow.errors import StoreMismatchError
from inflow.store import StoreAttrs
from inflow.store.attrs import FEATURE_FORMAT, require_pairing


def make_attrs(**overrides: object) -> StoreAttrs:
    sketch = BlockSketch("hadamard", 0, [40, 30], 16).to_attrs()
    values: dict[str, object] = dict(
        model_id="models/tiny", model_hash="abc123", checkpoint="checkpoint-10", checkpoint_step=10,
        lora_targets=("q_proj", "v_proj"), feature_kind="adam", sketch=sketch, dim=16, dtype="float16",
        n_rows=10, chunk_rows=4, data_hash="d0", code_version="0.1.0",
    )
    values.update(overrides)
    return StoreAttrs(**values)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    attrs = make_attrs()
    again = StoreAttrs.from_json(attrs.to_json())
    assert again == attrs and again.lora_targets == ("q_proj", "v_proj")
    assert attrs.n_chunks == 3 and hash(again) == hash(attrs)


def test_diff_names_fields_and_nested_sketch_keys() -> None:
    old = make_attrs()
    new = make_attrs(sketch=BlockSketch("hadamard", 1, [40, 30], 16).to_attrs(), checkpoint_step=20)
    lines = old.diff(new, ("in the store", "now"))
    assert "checkpoint_step: 10 in the store, 20 now" in lines
    assert "sketch.seed: 0 in the store, 1 now" in lines
    assert len(lines) == 2 and old.diff(old) == []
    assert make_attrs(code_version="0.2").blocking_diff(old) == []
    assert make_attrs(code_version="0.2").diff(old) == ['code_version: "0.2" here, "0.1.0" there']


def test_diff_of_block_layouts() -> None:
    old = make_attrs()
    sketch = BlockSketch("hadamard", 0, [40, 20, 10], 16).to_attrs()
    lines = old.diff(make_attrs(sketch=sketch))
    assert any(line.startswith("sketch.blocks: 2 entries here, 3 there") for line in lines)


@pytest.mark.parametrize(("field", "value"), [("feature_kind", "rmsprop"), ("dtype", "bfloat16"), ("dim", 17),
                                              ("chunk_rows", 0)])
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field if field != "chunk_rows" else "chunk_rows >= 1"):
        make_attrs(**{field: value})


def test_from_dict_names_missing_keys() -> None:
    data = make_attrs().to_dict()
    del data["data_hash"]
    with pytest.raises(ValueError, match="data_hash"):
        StoreAttrs.from_dict(data)
    assert {f.name for f in dataclasses.fields(StoreAttrs)} == set(make_attrs().to_dict())


def test_stores_written_before_the_feature_format_read_as_format_1_and_differ() -> None:
    now = make_attrs(feature_format=FEATURE_FORMAT, adapter_hash="a1", optimizer_hash="o1",
                     extraction={"batch_size": 16})
    old = now.to_dict()
    for key in ("feature_format", "adapter_hash", "optimizer_hash", "extraction"):
        del old[key]
    stored = StoreAttrs.from_dict(old)
    assert stored.feature_format == 1
    lines = stored.settings_diff(now, ("in the store", "now"))
    assert f"feature_format: 1 in the store, {FEATURE_FORMAT} now" in lines
    assert 'adapter_hash: "" in the store, "a1" now' in lines
    assert "extraction.batch_size: absent in the store, 16 now" in lines


def test_pairing_compares_model_checkpoint_sketch_and_format_only() -> None:
    pool = make_attrs(adapter_hash="a1", optimizer_hash="o1", extraction={"adam": {"eps": 1e-8}})
    target = make_attrs(feature_kind="sgd", adapter_hash="a1", n_rows=3, data_hash="d1", dtype="float32")
    assert pool.pairing_diff(target) == []  # kind, rows, dtype, optimizer and extraction settings may differ
    other = make_attrs(feature_kind="sgd", adapter_hash="a2",
                       sketch=BlockSketch("hadamard", 1, [40, 30], 16).to_attrs())
    assert pool.pairing_diff(other, ("pool", "target")) == ['adapter_hash: "a1" pool, "a2" target',
                                                            "sketch.seed: 0 pool, 1 target"]
    with pytest.raises(StoreMismatchError, match=r"sketch.seed: 0 in the pool store p.zarr, 1 in the target store"):
        require_pairing(pool, other, "p.zarr", "t.zarr")
    require_pairing(pool, target, "p.zarr", "t.zarr")  # no error
