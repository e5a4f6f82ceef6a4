"""Fast projectors against the explicit dense matrices (float64, 1e-10)."""

from __future__ import annotations

import pytest
import torch

from inflow.sketch import KINDS, BlockSketch, dense_block_matrix, dense_sketch_matrix, make_block_projector

SHAPES = [(1, 1), (5, 3), (37, 10), (64, 64), (100, 33), (257, 40), (300, 1)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("in_dim", "out_dim"), SHAPES)
def test_block_projector_matches_dense(kind: str, in_dim: int, out_dim: int) -> None:
    x = torch.randn(4, in_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(in_dim))
    projector = make_block_projector(kind, 11, 2, in_dim, out_dim, piece_bytes=256)  # many small pieces
    matrix = dense_block_matrix(kind, 11, 2, in_dim, out_dim)
    assert matrix.shape == (in_dim, out_dim)
    torch.testing.assert_close(projector.project(x), x @ matrix, rtol=0, atol=1e-10)


def test_sparse_jl_has_s_distinct_entries_per_row() -> None:
    matrix = dense_block_matrix("sparse_jl", 0, 0, 200, 50, sparsity=3)
    assert torch.all((matrix != 0).sum(dim=1) == 3)
    torch.testing.assert_close(matrix.abs().max(), torch.tensor(3**-0.5, dtype=torch.float64))


def test_hadamard_columns_are_orthogonal_before_padding() -> None:
    matrix = dense_block_matrix("hadamard", 0, 0, 64, 16)  # no padding: M^T M = (64 / 16) I
    torch.testing.assert_close(matrix.T @ matrix, 4 * torch.eye(16, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_block_sketch_matches_block_diagonal_matrix(kind: str) -> None:
    sketch = BlockSketch(kind, 5, [120, 2, 300, 45], 460, piece_bytes=512)  # block 1 kept whole
    assert any(not b.projected for b in sketch.layout) and any(b.projected for b in sketch.layout)
    x = torch.randn(6, sketch.in_dim, dtype=torch.float64)
    expected = x @ dense_sketch_matrix(sketch)
    torch.testing.assert_close(sketch.project(x, out_dtype=None), expected, rtol=0, atol=1e-10)
    got32 = sketch.project(x.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, expected.float(), rtol=1e-4, atol=1e-4)
