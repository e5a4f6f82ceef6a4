"""allocate_dims: never widen, proportional shares summing to dim, small blocks kept whole."""

from __future__ import annotations

import pytest

from inflow.sketch import BlockSketch, allocate_dims


def test_small_gradients_stay_unprojected() -> None:
    assert allocate_dims([10, 20, 30], 100) == [10, 20, 30]
    assert allocate_dims([10, 20, 30], 60) == [10, 20, 30]
    sketch = BlockSketch("rademacher", 0, [10, 20, 30], 100)
    assert sketch.out_dim == 60 and not any(b.projected for b in sketch.layout)


def test_proportional_shares() -> None:
    assert allocate_dims([1000] * 8, 1024) == [128] * 8
    assert allocate_dims([300, 100], 40) == [30, 10]
    assert allocate_dims([1000, 5, 1000], 100) == [49, 1, 50]  # [49.9, 0.25, 49.9] -> [50, 0, 50], then 0 -> 1
    assert sum(allocate_dims([7, 11, 13], 10)) == 10


def test_iteration_keeps_blocks_that_fit_after_resharing() -> None:
    # pass 1: 20 * [14, 4, 4] / 22 = [12.73, 3.64, 3.64] -> [13, 4, 3]: block 1 fits (4 <= 4), kept whole;
    # pass 2: 16 * [14, 4] / 18 = [12.44, 3.56] -> [12, 4]: block 2 now fits; pass 3: 12 left for block 0.
    assert allocate_dims([14, 4, 4], 20) == [12, 4, 4]
    assert allocate_dims([120, 2, 300, 45], 460) == [118, 2, 296, 44]


def test_small_blocks_are_projected_when_over_their_share() -> None:
    dims = allocate_dims([1000, 30, 1000], 300)  # the 30-block's share is 4.4
    assert dims[1] in (4, 5) and sum(dims) == 300


@pytest.mark.parametrize("sizes", [[5, 1000, 3, 77, 12_000], [1] * 20 + [500], [2**20, 17, 2**18]])
@pytest.mark.parametrize("dim", [25, 100, 1000, 4096])
def test_invariants(sizes: list[int], dim: int) -> None:
    dims = allocate_dims(sizes, dim)
    assert len(dims) == len(sizes)
    assert all(1 <= d <= s for d, s in zip(dims, sizes))  # never widen, never empty
    assert sum(dims) == (sum(sizes) if sum(sizes) <= dim else dim)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="raise sketch.dim"):
        allocate_dims([100, 100, 100], 2)
    with pytest.raises(ValueError, match="positive"):
        allocate_dims([100, 0], 10)
