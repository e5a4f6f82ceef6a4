"""Randomized Hadamard sketch of one block (SRHT): random signs, Walsh-Hadamard transform, random coordinates.

For a block of ``n = in_dim`` coordinates padded with zeros to ``N = 2**ceil(log2 n)``::

    P x = (1 / sqrt(d)) * (H_N D x)[S]

with ``D`` a diagonal of random signs (``word(k_sign, r, 0) & 1``: 1 is +1), ``H_N`` the *unnormalised*
Walsh-Hadamard matrix (``H[i, j] = (-1)^popcount(i & j)``, Sylvester order) and ``S`` a uniformly random subset of
``d`` of the ``N`` transformed coordinates, in increasing order. The scale is the usual ``sqrt(N / d)`` applied to
the orthonormal transform ``H_N / sqrt(N)``, i.e. ``1 / sqrt(d)`` on ``H_N``. Unbiased: a coordinate is in ``S``
with probability ``d / N`` and ``H_N^T H_N = N I``, so ``E[<Px, Py>] = (1/d)(d/N) <H D x, H D y> = <x, y>``.

``S`` is the ``d`` smallest of the unique keys ``(word(k_pick, i, 0) << 31) | i`` over ``i < N``, found piece by
piece with ``topk`` (bounded memory, no ties, so the same subset for every piece size).

Cost: ``O(B * N log N)`` adds and ``O(n + N)`` hashes once (signs and subset, a few bytes per coordinate,
cached). Pick it for the fastest exact-scaling sketch of large dense blocks; padding costs up to 2x when ``n`` is
just above a power of two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inflow.sketch.cache import MIB, PieceCache
from inflow.sketch.counter_rng import random_words_range, stream_key

KIND = "hadamard"
SIGN_STREAM = 0
PICK_STREAM = 1
INDEX_BITS = 31  # the coordinate index occupies the low 31 bits of a selection key
DEFAULT_PIECE_BYTES = 8 * MIB


def padded_size(n: int) -> int:
    """The smallest power of two >= ``n``."""
    return 1 << max(0, n - 1).bit_length()


def fwht(buf: Tensor, tmp: Tensor) -> Tensor:
    """Unnormalised Walsh-Hadamard transform of each row: ``buf [B, N] -> buf @ H_N`` (N a power of two).

    Ping-pongs between ``buf`` and ``tmp`` (both overwritten); returns whichever holds the result. Every level is an
    elementwise add/sub, so each row's result is independent of the other rows.
    """
    rows, n = buf.shape
    src, dst = buf, tmp
    half = 1
    while half < n:
        s = src.view(rows, n // (2 * half), 2, half)
        t = dst.view(rows, n // (2 * half), 2, half)
        torch.add(s[:, :, 0], s[:, :, 1], out=t[:, :, 0])
        torch.sub(s[:, :, 0], s[:, :, 1], out=t[:, :, 1])
        src, dst = dst, src
        half *= 2
    return src


class HadamardSketch:
    """Projects ``x [B, in_dim] -> [B, out_dim]`` with the subsampled randomized Hadamard transform."""

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
    ) -> None:
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.n_pad = padded_size(in_dim)
        if self.n_pad > 1 << INDEX_BITS:
            raise ValueError(f"hadamard blocks are limited to 2**31 coordinates, got {in_dim}: use more blocks")
        if out_dim > self.n_pad:
            raise ValueError(f"hadamard cannot widen: out_dim {out_dim} > padded in_dim {self.n_pad}")
        self.sign_key = stream_key(KIND, seed, block, SIGN_STREAM)
        self.pick_key = stream_key(KIND, seed, block, PICK_STREAM)
        self.scale = out_dim**-0.5
        self.piece_bytes = piece_bytes
        self.piece_rows = max(1, piece_bytes // 16)  # int64 words + scratch while hashing
        self.cache = cache if cache is not None else PieceCache(0)

    def signs(self, device: torch.device) -> Tensor:
        """The diagonal of ``D`` for the ``in_dim`` real coordinates: int8 [in_dim] of ±1."""
        key = (KIND, "signs", self.sign_key, self.in_dim, str(device))
        return self.cache.get(key, lambda: self._make_signs(device))

    def picked(self, device: torch.device) -> Tensor:
        """The subset ``S``: int64 [out_dim], increasing indices into ``[0, n_pad)``."""
        key = (KIND, "picked", self.pick_key, self.n_pad, self.out_dim, str(device))
        return self.cache.get(key, lambda: self._make_picked(device))

    def project(self, x: Tensor) -> Tensor:
        """``(1/sqrt(d)) (H D x)[S]``: [B, in_dim] float32/float64 -> [B, out_dim] of the same dtype.

        The batch is transformed in groups of rows whose two [rows, n_pad] buffers fit ``piece_bytes``.
        """
        assert x.dim() == 2 and x.shape[1] == self.in_dim
        signs = self.signs(x.device).to(x.dtype)
        picked = self.picked(x.device)
        out = torch.empty(x.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        group = max(1, self.piece_bytes // (2 * self.n_pad * x.element_size()))
        for start in range(0, x.shape[0], group):
            stop = min(start + group, x.shape[0])
            buf = torch.zeros(stop - start, self.n_pad, dtype=x.dtype, device=x.device)
            torch.mul(x[start:stop], signs, out=buf[:, : self.in_dim])
            transformed = fwht(buf, torch.empty_like(buf))
            torch.mul(transformed[:, picked], self.scale, out=out[start:stop])
        return out

    def _make_signs(self, device: torch.device) -> Tensor:
        pieces = []
        for start in range(0, self.in_dim, self.piece_rows):
            stop = min(start + self.piece_rows, self.in_dim)
            words = random_words_range(self.sign_key, start, stop, 1, device)[:, 0]
            pieces.append((2 * (words & 1) - 1).to(torch.int8))
        return torch.cat(pieces)

    def _make_picked(self, device: torch.device) -> Tensor:
        best = torch.empty(0, dtype=torch.int64, device=device)
        for start in range(0, self.n_pad, self.piece_rows):
            stop = min(start + self.piece_rows, self.n_pad)
            words = random_words_range(self.pick_key, start, stop, 1, device)[:, 0]
            keys = torch.bitwise_left_shift(words, INDEX_BITS).bitwise_or_(torch.arange(start, stop, device=device))
            candidates = torch.cat([best, keys])
            best = torch.topk(candidates, min(self.out_dim, candidates.numel()), largest=False, sorted=False).values
        return torch.sort(best.bitwise_and_((1 << INDEX_BITS) - 1)).values
