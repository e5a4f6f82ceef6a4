"""Grouped projection: rows land where their index says, groups are cut by rows (the byte budget over a row's
bytes) whatever the batches, results match per batch, and projecting blocks on threads changes no bit."""

from __future__ import annotations

import pytest
import torch

from inflow.sketch import BlockSketch
from inflow.sketch.groups import SketchGroups

SIZES = [300, 40, 500]
D = sum(SIZES)
ROW_BYTES = D * 4  # float32


def _batches() -> list[tuple[list[int], torch.Tensor]]:
    """Five batches of 3 rows each in a shuffled row order (as length bucketing gives)."""
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(15, generator=gen).tolist()
    return [(order[i:i + 3], torch.randn(3, D, generator=gen, dtype=torch.float64)) for i in range(0, 15, 3)]


@pytest.mark.parametrize("kind", ["rademacher", "sparse_jl", "hadamard"])
@pytest.mark.parametrize("budget_rows", [0, 3, 7, 100])
def test_grouped_equals_per_batch_projection(kind: str, budget_rows: int) -> None:
    sketch = BlockSketch(kind, 2, SIZES, 64)
    groups = SketchGroups(sketch, torch.full((15, sketch.out_dim), float("nan")), budget_rows * ROW_BYTES)
    expected = torch.empty(15, sketch.out_dim)
    for index, feats in _batches():
        groups.add(index, feats.float())
        expected[index] = sketch.project(feats.float())
    out = groups.finish()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # 0 and 3 rows: each batch fills the budget on its own; 7 rows: two batches a group; 100: all in one call
    assert groups.calls == {0: 5, 3: 5, 7: 3, 100: 1}[budget_rows]


def test_nothing_written_before_a_group_is_projected() -> None:
    sketch = BlockSketch("rademacher", 0, SIZES, 64)
    out = torch.full((15, sketch.out_dim), float("nan"))
    groups = SketchGroups(sketch, out, 100 * ROW_BYTES)
    index, feats = _batches()[0]
    groups.add(index, feats.float())
    assert groups.calls == 0 and out.isnan().all()
    groups.flush()
    assert groups.calls == 1 and not out[index].isnan().any()
    groups.flush()  # nothing gathered: no call
    assert groups.calls == 1


def test_bad_input_is_a_clear_error() -> None:
    sketch = BlockSketch("sparse_jl", 0, SIZES, 64)
    with pytest.raises(ValueError, match="output must be"):
        SketchGroups(sketch, torch.empty(4, 10))
    with pytest.raises(ValueError, match=">= 0 bytes"):
        SketchGroups(sketch, torch.empty(4, 64), -1)
    groups = SketchGroups(sketch, torch.empty(4, 64))
    with pytest.raises(ValueError, match="for 2 rows"):
        groups.add([0, 1], torch.zeros(3, D))


@pytest.mark.parametrize("kind", ["rademacher", "sparse_jl", "hadamard"])
def test_groups_are_cut_by_rows_so_the_batching_does_not_change_a_bit(kind: str) -> None:
    """The same rows in the same order, batched 3 or 5 at a time, and with the blocks projected on threads."""
    from concurrent.futures import ThreadPoolExecutor

    sketch = BlockSketch(kind, 3, SIZES, 64)
    feats = torch.randn(15, D, generator=torch.Generator().manual_seed(4))
    order = torch.randperm(15, generator=torch.Generator().manual_seed(5)).tolist()
    results = []
    with ThreadPoolExecutor(3) as pool:
        for step, executor in [(3, None), (5, None), (5, pool), (15, pool)]:
            groups = SketchGroups(sketch, torch.empty(15, sketch.out_dim), 4 * ROW_BYTES, executor=executor)
            for start in range(0, 15, step):
                rows = order[start:start + step]
                groups.add(rows, feats[rows])
            results.append(groups.finish())
            assert groups.calls == 4  # 4 + 4 + 4 + 3 rows
    assert all(torch.equal(results[0], r) for r in results[1:])
