"""The Johnson-Lindenstrauss property: inner products kept to ~1/sqrt(d), and unbiased over seeds."""

from __future__ import annotations

import pytest
import torch

from inflow.sketch import KINDS, BlockSketch


def _unit(n: int, count: int, seed: int) -> torch.Tensor:
    x = torch.randn(count, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("kind", KINDS)
def test_inner_product_error_scales_as_one_over_sqrt_d(kind: str) -> None:
    x, y = _unit(2000, 200, 0), _unit(2000, 200, 1)
    exact = (x * y).sum(dim=1)
    errors = {}
    for d in (64, 256):
        sketch = BlockSketch(kind, 0, [1200, 800], d)
        errors[d] = float(((sketch.project(x, out_dtype=None) * sketch.project(y, out_dtype=None)).sum(1) - exact)
                          .abs().mean())
        # E|N(0, 1/d)| = 0.8 / sqrt(d) for near-orthogonal pairs; allow sampling noise
        assert errors[d] < 1.2 / d**0.5, (d, errors[d])
    assert 1.4 < errors[64] / errors[256] < 2.9  # ~2 when the error is ~1/sqrt(d)


@pytest.mark.parametrize("kind", KINDS)
def test_unbiased_across_seeds(kind: str) -> None:
    x, z = _unit(300, 2, 3)
    y = 0.6 * x + 0.8 * (z - (z @ x) * x) / (z - (z @ x) * x).norm()  # <x, y> = 0.6
    values = torch.tensor([
        float(BlockSketch(kind, seed, [200, 100], 16).project(torch.stack([x, y]), out_dtype=None).prod(0).sum())
        for seed in range(300)
    ], dtype=torch.float64)
    assert abs(float(values.mean()) - 0.6) < 4 * float(values.std()) / 300**0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_jl_sorted_scatter_matches_index_add(dtype: torch.dtype) -> None:
    """The GPU's deterministic scatter (index_put_ with accumulate, run here on the CPU) gives the CPU path's values,
    and the same bits on a second run."""
    from inflow.sketch.sparse_jl import SparseJLSketch

    sketch = SparseJLSketch(3, 1, 1000, 96, sparsity=4, piece_bytes=4096)  # several pieces
    x = torch.randn(7, 1000, generator=torch.Generator().manual_seed(2), dtype=dtype)
    sorted_once, sorted_twice = sketch.project_sorted(x), sketch.project_sorted(x)
    assert torch.equal(sorted_once, sorted_twice)
    torch.testing.assert_close(sorted_once, sketch.project(x), rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparse_jl_on_cuda_gives_the_same_bits_on_every_run() -> None:
    sketch = BlockSketch("sparse_jl", 0, [40_000, 3000], 512, device="cuda")
    x = torch.randn(64, 43_000, generator=torch.Generator().manual_seed(0)).cuda()
    runs = [sketch.project(x) for _ in range(5)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    torch.testing.assert_close(runs[0].cpu(), BlockSketch("sparse_jl", 0, [40_000, 3000], 512).project(x.cpu()),
                               rtol=1e-4, atol=1e-4)
