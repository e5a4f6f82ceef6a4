"""Sparse Johnson-Lindenstrauss sketch of one block (CountSketch with ``s`` nonzeros per input coordinate).

The ``d`` output coordinates are split into ``s`` contiguous segments (segment ``j`` is
``[floor(j d / s), floor((j+1) d / s))``; the "block construction" of Kane and Nelson). Input coordinate ``r`` sends
``x_r * sigma_rj / sqrt(s)`` to one coordinate of every segment ``j``, so its ``s`` targets are always distinct.
With ``w = word(key, r, j)``: ``sigma_rj = +1`` if ``w & 1`` else ``-1``, target ``start_j + (w >> 1) mod len_j``
(the modulo bias is below ``len_j / 2**31``, negligible). Unbiased: for ``r != r'`` the signs are independent and
average out; for ``r == r'`` the ``s`` distinct targets each contribute ``x_r y_r / s``, so
``E[<Px, Py>] = <x, y>``.

Cost: ``O(B * in_dim * s)`` (``index_add_`` per segment) and ``12 * s`` bytes per input coordinate when cached
(targets int64 + signs int8). Pick it for large blocks on CPU or when the Rademacher sketch is too slow; variance
is close to the dense sketch's for ``s >= 4`` on gradient-like (not adversarially sparse) inputs.

Determinism: on a CPU ``index_add_`` sums every output's inputs in input order. On a GPU ``index_add_`` adds with
atomics, in whatever order the threads arrive, so its bits change from run to run; there the scatter is
``index_put_(..., accumulate=True)`` on the transposed output instead, whose CUDA kernel sorts the target indices
and adds each output's inputs in one thread, in a fixed order: the same bits on every run (not the CPU's: a GPU
store records its device type anyway).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inflow.sketch.cache import MIB, PieceCache
from inflow.sketch.counter_rng import random_words_range, stream_key

KIND = "sparse_jl"
DEFAULT_SPARSITY = 4
DEFAULT_PIECE_BYTES = 8 * MIB


def segment_bounds(out_dim: int, sparsity: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the ``sparsity`` output segments (every length >= 1 since ``sparsity <= out_dim``)."""
    assert 1 <= sparsity <= out_dim
    starts = [j * out_dim // sparsity for j in range(sparsity + 1)]
    return [(starts[j], starts[j + 1] - starts[j]) for j in range(sparsity)]


class SparseJLSketch:
    """Projects ``x [B, in_dim] -> [B, out_dim]`` by scattering each coordinate to ``s`` signed targets."""

    kind = KIND

    def __init__(
        self,
        seed: int,
        block: int,
        in_dim: int,
        out_dim: int,
        *,
        sparsity: int = DEFAULT_SPARSITY,
        piece_bytes: int = DEFAULT_PIECE_BYTES,
        cache: PieceCache | None = None,
    ) -> None:
        if sparsity < 1:
            raise ValueError(f"sparse_jl sparsity must be >= 1, got {sparsity}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.sparsity = min(sparsity, out_dim)
        self.key = stream_key(KIND, seed, block, 0)
        self.scale = self.sparsity**-0.5
        self.segments = segment_bounds(out_dim, self.sparsity)
        self.piece_rows = max(1, piece_bytes // (16 * self.sparsity))  # int64 words + scratch while hashing
        self.cache = cache if cache is not None else PieceCache(0)

    def targets_rows(self, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For inputs ``start..stop-1``: targets int64 [s, rows] and signs int8 [s, rows] (±1, unscaled)."""
        words = random_words_range(self.key, start, stop, self.sparsity, device).T  # [s, rows]
        seg_start = torch.tensor([a for a, _ in self.segments], dtype=torch.int64, device=device).unsqueeze(1)
        seg_len = torch.tensor([n for _, n in self.segments], dtype=torch.int64, device=device).unsqueeze(1)
        targets = torch.bitwise_right_shift(words, 1).remainder_(seg_len).add_(seg_start)
        signs = (2 * (words & 1) - 1).to(torch.int8)
        return targets.contiguous(), signs.contiguous()

    def project(self, x: Tensor) -> Tensor:
        """``x @ M``: [B, in_dim] float32/float64 -> [B, out_dim] of the same dtype.

        CPU sums are in input order for every output, so a row's result does not depend on the batch around it.
        """
        assert x.dim() == 2 and x.shape[1] == self.in_dim
        if x.device.type != "cpu":
            return self.project_sorted(x)
        out = torch.zeros(x.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        for start, stop, targets, signs in self._pieces(x.device):
            piece = x[:, start:stop]
            for j in range(self.sparsity):
                out.index_add_(1, targets[j], piece * signs[j].to(x.dtype))
        return out.mul_(self.scale)

    def project_sorted(self, x: Tensor) -> Tensor:
        """``x @ M`` with a deterministic scatter (the GPU path; any device): the same values as :meth:`project`
        up to float summation order, and the same bits on every run.

        Accumulates into the transposed output ``[out_dim, B]`` with ``index_put_(accumulate=True)``: one index per
        input coordinate, each adding a whole ``[B]`` row, which CUDA does by sorting the indices (no atomics).
        """
        assert x.dim() == 2 and x.shape[1] == self.in_dim
        out_t = torch.zeros(self.out_dim, x.shape[0], dtype=x.dtype, device=x.device)
        for start, stop, targets, signs in self._pieces(x.device):
            piece_t = x[:, start:stop].T  # [rows, B]
            for j in range(self.sparsity):
                out_t.index_put_((targets[j],), piece_t * signs[j].to(x.dtype).unsqueeze(1), accumulate=True)
        return out_t.T.mul(self.scale)

    def _pieces(self, device: torch.device):  # noqa: ANN202 (an iterator of (start, stop, targets, signs))
        """The input pieces in order, with their targets and signs (cached while the budget allows)."""
        for start in range(0, self.in_dim, self.piece_rows):
            stop = min(start + self.piece_rows, self.in_dim)
            key = (KIND, self.key, self.in_dim, self.out_dim, self.sparsity, start, stop, str(device))
            targets, signs = self.cache.get(key, lambda: self.targets_rows(start, stop, device))
            yield start, stop, targets, signs
