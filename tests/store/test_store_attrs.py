"""StoreAttrs: validation, JSON round trip, readable differences."""

from __future__ import annotations

import dataclasses

import pytest

from inflow.sketch import BlockSketch
from inflow.store import StoreAttrs


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
