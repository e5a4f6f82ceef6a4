"""Determinism: same numbers across constructions, batch splits, piece sizes, caching; attrs round trip.

Exactness: ``sparse_jl`` and ``hadamard`` are bit-identical under batch splits on CPU (elementwise ops and
in-order ``index_add_``); ``rademacher`` goes through BLAS, whose kernels for one row (gemv) and many (gemm) sum
in different orders, so it is held to 1e-5 relative there and bit-identical only for equal batch shapes.
"""

from __future__ import annotations

import json

import pytest
import torch

from inflow.sketch import KINDS, BlockSketch

SIZES = [700, 64, 1500, 333]


def _x(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(9, sum(SIZES), dtype=dtype, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", KINDS)
def test_two_constructions_agree_bitwise(kind: str) -> None:
    x = _x()
    a = BlockSketch(kind, 3, SIZES, 200).project(x)
    b = BlockSketch(kind, 3, SIZES, 200, cache_bytes=0).project(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, BlockSketch(kind, 4, SIZES, 200).project(x))


@pytest.mark.parametrize("kind", KINDS)
def test_batch_splits(kind: str) -> None:
    x = _x()
    sketch = BlockSketch(kind, 0, SIZES, 200)
    whole = sketch.project(x)
    for i in range(x.shape[0]):
        single = sketch.project(x[i : i + 1])
        if kind == "rademacher":
            torch.testing.assert_close(single, whole[i : i + 1], rtol=0, atol=1e-5 * float(whole.abs().max()))
        else:
            assert torch.equal(single, whole[i : i + 1])


@pytest.mark.parametrize("kind", KINDS)
def test_piece_size_does_not_change_results(kind: str) -> None:
    x = _x(torch.float64)
    coarse = BlockSketch(kind, 1, SIZES, 200).project(x, out_dtype=None)
    fine = BlockSketch(kind, 1, SIZES, 200, piece_bytes=1000).project(x, out_dtype=None)
    torch.testing.assert_close(fine, coarse, rtol=0, atol=1e-12)


def test_hadamard_subset_is_piece_independent() -> None:
    coarse = BlockSketch("hadamard", 2, [5000], 100).projectors[0]
    fine = BlockSketch("hadamard", 2, [5000], 100, piece_bytes=16 * 37).projectors[0]
    cpu = torch.device("cpu")
    assert torch.equal(coarse.picked(cpu), fine.picked(cpu))  # type: ignore[attr-defined]
    assert torch.equal(coarse.signs(cpu), fine.signs(cpu))  # type: ignore[attr-defined]


def test_cache_stays_within_budget_and_is_reused() -> None:
    x = _x()
    sketch = BlockSketch("rademacher", 0, SIZES, 200, piece_bytes=4096, cache_bytes=20_000)
    first = sketch.project(x)
    assert 0 < sketch.cache.used_bytes <= 20_000
    assert torch.equal(sketch.project(x), first) and sketch.cache.hits > 0


def test_attrs_round_trip_through_json() -> None:
    sketch = BlockSketch("sparse_jl", 9, SIZES, 200, sparsity=2)
    attrs = json.loads(json.dumps(sketch.to_attrs()))
    rebuilt = BlockSketch.from_attrs(attrs)
    assert rebuilt.to_attrs() == sketch.to_attrs()
    assert torch.equal(rebuilt.project(_x()), sketch.project(_x()))


def test_wrong_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sum of the block sizes"):
        BlockSketch("hadamard", 0, SIZES, 200).project(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="sketch.kind"):
        BlockSketch("gaussian", 0, SIZES, 200)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind: str) -> None:
    x = _x(torch.float64)
    cpu = BlockSketch(kind, 0, SIZES, 200).project(x, out_dtype=None)
    gpu = BlockSketch(kind, 0, SIZES, 200, device="cuda").project(x, out_dtype=None)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)
