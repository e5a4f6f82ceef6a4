"""Dense Rademacher sketch of one block (LESS / TRAK parity): ``M[r, c] = ±1 / sqrt(d)``.

The sign of entry ``(r, c)`` is bit ``c % 32`` of ``word(key, r, c // 32)`` (see ``counter_rng``): bit 1 is +1,
bit 0 is -1. With independent fair signs, ``E[<x M, y M>] = sum_c sum_r x_r y_r / d = <x, y>``.

Cost: ``O(B * in_dim * d)`` multiply-adds, plus ``in_dim * d / 32`` hashes when the piece is not cached. The matrix
is walked in pieces of rows (at most ``piece_bytes`` of float32 each); a piece is cached expanded (floats) while
the cache budget allows, else *packed*, one bit per entry (``in_dim * d / 8`` bytes for the whole block), and
expanded through a 256 x 8 lookup table just before its matrix product. On a CUDA device with triton, float32 input
goes through one fused kernel instead (:mod:`inflow.sketch.rademacher_triton`: the same signs generated in
registers inside the matmul; no piece is materialised or cached), its products in IEEE float32, or in TF32 on
tensor cores when built with ``tf32=True`` (the features stage does so under bfloat16/float16 autocast: inputs
rounded to 10 mantissa bits, an error of the order of a float16 store's rounding and far below the gradients'
own bfloat16 rounding). Pick it for parity with LESS/TRAK features; on CPU the sparse JL and Hadamard sketches
are one to two orders of magnitude faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from inflow.devices import pad_rows
from inflow.sketch import rademacher_triton
from inflow.sketch.cache import MIB, PieceCache
from inflow.sketch.counter_rng import random_words_range, stream_key

KIND = "rademacher"
DEFAULT_PIECE_BYTES = 8 * MIB


class RademacherSketch:
    """Projects ``x [B, in_dim] -> x @ M [B, out_dim]`` with ``M`` the block's Rademacher matrix (never held whole)."""

    kind = KIND

    def __init__(
        self,
        seed: int,
        block: int,
        in_dim: int,
        out_dim: int,
        *,
        piece_bytes: int = DEFAULT_PIECE_BYTES,
        cache: PieceCache | None = None,
        tf32: bool = False,
    ) -> None:
        self.tf32 = tf32  # the fused kernel's products in TF32 (tensor cores) rather than IEEE float32
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.key = stream_key(KIND, seed, block, 0)
        self.n_words = -(-out_dim // 32)  # 32 signs per hashed word; the padded columns are dropped at the end
        self.scale = out_dim**-0.5
        self.piece_rows = max(1, piece_bytes // (self.n_words * 32 * 4))
        self.cache = cache if cache is not None else PieceCache(0)
        self._tables: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def packed_rows(self, start: int, stop: int, device: torch.device) -> Tensor:
        """Sign bits, rows ``start..stop-1``: uint8 [rows, 4 * n_words]; byte ``4w + j`` is bits 8j..8j+7 of word w."""
        words = random_words_range(self.key, start, stop, self.n_words, device)
        shifts = torch.arange(0, 32, 8, dtype=torch.int64, device=device)
        packed = torch.bitwise_right_shift(words.unsqueeze(-1), shifts).bitwise_and_(0xFF)
        return packed.to(torch.uint8).reshape(stop - start, 4 * self.n_words)

    def matrix_rows(self, start: int, stop: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Rows ``start..stop-1`` of ``M`` including the padding columns: [rows, 32 * n_words] of ``dtype``."""
        key = (KIND, self.key, self.in_dim, self.out_dim, start, stop, str(device))

        def expand() -> Tensor:
            packed = self.cache.get(key, lambda: self.packed_rows(start, stop, device))
            expanded = F.embedding(packed.int(), self._table(dtype, device))  # int32 ids: 2x faster than int64
            return expanded.view(stop - start, 32 * self.n_words)

        # the expanded piece is kept while the budget allows (expansion costs more than the product itself);
        # pieces beyond it are expanded from their packed bits (32x smaller) on every call
        return self.cache.get((*key, str(dtype)), expand)

    def project(self, x: Tensor) -> Tensor:
        """``x @ M``: [B, in_dim] float32/float64 -> [B, out_dim] of the same dtype, accumulated piece by piece."""
        assert x.dim() == 2 and x.shape[1] == self.in_dim
        if x.dtype == torch.float32 and rademacher_triton.available(x):  # one fused kernel, signs in registers
            return rademacher_triton.project(x, self.key, self.out_dim, self.scale, ieee=not self.tf32)
        n = x.shape[0]
        x = pad_rows(x)  # a row's bits must not depend on how many rows share the call (inflow.devices)
        out = torch.zeros(x.shape[0], 32 * self.n_words, dtype=x.dtype, device=x.device)
        for start in range(0, self.in_dim, self.piece_rows):
            stop = min(start + self.piece_rows, self.in_dim)
            out.addmm_(x[:, start:stop], self.matrix_rows(start, stop, x.dtype, x.device))
        return out[:n, : self.out_dim]

    def _table(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """[256, 8]: entry ``[v, k]`` is ``+scale`` where bit k of byte v is set, else ``-scale``."""
        table = self._tables.get((dtype, device))
        if table is None:
            bits = torch.arange(256, device=device).unsqueeze(1).bitwise_right_shift(torch.arange(8, device=device)) & 1
            table = (2 * bits - 1).to(dtype) * self.scale
            self._tables[(dtype, device)] = table
        return table
