"""Explicit sketch matrices: the test oracle for the fast projectors (small blocks only: ``in_dim x out_dim`` floats).

Each function restates a kind's definition in its plainest form (bit extraction by shifts, a scatter per input,
the Hadamard matrix from its popcount formula, a full sort for the subset) from the same random words, so a fast
path that pieces, packs, caches or transforms wrongly disagrees with it. Results are float64 on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inflow.sketch.base import check_kind
from inflow.sketch.block import BlockSketch
from inflow.sketch.counter_rng import random_words_range, stream_key
from inflow.sketch.hadamard import INDEX_BITS, PICK_STREAM, SIGN_STREAM, padded_size
from inflow.sketch.sparse_jl import DEFAULT_SPARSITY, segment_bounds

_CPU = torch.device("cpu")


def hadamard_matrix(n: int) -> Tensor:
    """The unnormalised Walsh-Hadamard matrix ``H[i, j] = (-1)^popcount(i & j)``: float64 [n, n], n a power of two."""
    both = torch.arange(n).unsqueeze(1) & torch.arange(n).unsqueeze(0)
    parity = torch.zeros_like(both)
    while bool(both.any()):
        parity ^= both & 1
        both = both >> 1
    return (1 - 2 * parity).double()


def _rademacher(seed: int, block: int, in_dim: int, out_dim: int) -> Tensor:
    words = random_words_range(stream_key("rademacher", seed, block, 0), 0, in_dim, -(-out_dim // 32), _CPU)
    cols = torch.arange(out_dim)
    bits = (words[:, cols // 32] >> (cols % 32)) & 1  # [in_dim, out_dim]
    return (2 * bits - 1).double() / out_dim**0.5


def _sparse_jl(seed: int, block: int, in_dim: int, out_dim: int, sparsity: int) -> Tensor:
    s = min(sparsity, out_dim)
    words = random_words_range(stream_key("sparse_jl", seed, block, 0), 0, in_dim, s, _CPU)
    matrix = torch.zeros(in_dim, out_dim, dtype=torch.float64)
    for j, (start, length) in enumerate(segment_bounds(out_dim, s)):
        for r in range(in_dim):
            word = int(words[r, j])
            matrix[r, start + (word >> 1) % length] = (1.0 if word & 1 else -1.0) / s**0.5
    return matrix


def _hadamard(seed: int, block: int, in_dim: int, out_dim: int) -> Tensor:
    n_pad = padded_size(in_dim)
    sign_words = random_words_range(stream_key("hadamard", seed, block, SIGN_STREAM), 0, in_dim, 1, _CPU)[:, 0]
    signs = (2 * (sign_words & 1) - 1).double()
    pick_words = random_words_range(stream_key("hadamard", seed, block, PICK_STREAM), 0, n_pad, 1, _CPU)[:, 0]
    keys = (pick_words << INDEX_BITS) | torch.arange(n_pad)
    picked = torch.sort(torch.argsort(keys)[:out_dim]).values
    return signs.unsqueeze(1) * hadamard_matrix(n_pad)[:in_dim, picked] / out_dim**0.5


def dense_block_matrix(
    kind: str, seed: int, block: int, in_dim: int, out_dim: int, *, sparsity: int = DEFAULT_SPARSITY
) -> Tensor:
    """The matrix ``M`` [in_dim, out_dim] (float64, CPU) whose ``x @ M`` the projector of this block computes."""
    check_kind(kind)
    if kind == "rademacher":
        return _rademacher(seed, block, in_dim, out_dim)
    if kind == "sparse_jl":
        return _sparse_jl(seed, block, in_dim, out_dim, sparsity)
    return _hadamard(seed, block, in_dim, out_dim)


def dense_sketch_matrix(sketch: BlockSketch) -> Tensor:
    """The block-diagonal matrix [D, out_dim] (float64, CPU) of a whole :class:`BlockSketch`; identity blocks as I."""
    matrix = torch.zeros(sketch.in_dim, sketch.out_dim, dtype=torch.float64)
    for b in sketch.layout:
        rows = slice(b.in_offset, b.in_offset + b.in_dim)
        cols = slice(b.out_offset, b.out_offset + b.out_dim)
        matrix[rows, cols] = (
            dense_block_matrix(sketch.kind, sketch.seed, b.index, b.in_dim, b.out_dim, sparsity=sketch.sparsity)
            if b.projected
            else torch.eye(b.in_dim, dtype=torch.float64)
        )
    return matrix
