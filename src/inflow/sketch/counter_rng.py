"""Counter-based random bits from torch integer ops: the same numbers on every device.

A sketch must be a pure function of ``(kind, seed, block, in_dim, out_dim)``: identical on CPU and GPU, for any
batch size, chunking or worker count. ``torch.Generator`` streams differ between CPU and CUDA and depend on how
many numbers were drawn before, so the sketches never use them. Every random 32-bit word is instead a hash of its
coordinates ``(key, r, c)``::

    s_r = mix32(r ^ k_lo)        t_r = mix32(s_r ^ k_hi)        word(key, r, c) = mix32(mix32(s_r ^ c) ^ t_r)

where ``mix32`` is Chris Wellons' *lowbias32* finaliser (a bijection on 32-bit integers with low avalanche bias)
and ``(k_lo, k_hi)`` are the two halves of a 64-bit key. For a fixed row the map ``c -> word`` is a bijection,
and words of two rows collide only at the rate of an ideal 32-bit hash.

Keys are derived in exact Python integer arithmetic by chaining splitmix64 over ``(seed, *path)``
(:func:`derive_key`): ``k = mix64(seed)``, then ``k = mix64(k ^ part)`` for each part, so ``(seed, block)`` pairs
never collide the way additive seeds (``seed + block``) do.

Overflow: torch has no unsigned 64-bit arithmetic and signed overflow is not something to rely on, so all values
are kept in ``[0, 2**32)`` inside int64 tensors and every product stays below ``2**63``: a multiplier with its top
bit set, ``c = 2**31 + c'``, is applied as ``x * c' + ((x & 1) << 31)`` (mod ``2**32``). Right shifts only ever act
on non-negative values, so arithmetic and logical shifts agree.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF

# lowbias32 (https://nullprogram.com/blog/2018/07/31/): x ^= x>>16; x *= M1; x ^= x>>15; x *= M2; x ^= x>>16
_M1 = 0x7FEB352D  # < 2**31: x * _M1 < 2**63 for x < 2**32
_M2_LOW = 0x846CA68B - 0x80000000  # the second multiplier without its top bit (added back as (x & 1) << 31)


def splitmix64(x: int) -> int:
    """The splitmix64 output function on a 64-bit integer (exact Python arithmetic; a bijection)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_key(seed: int, *path: int) -> int:
    """A 64-bit key for the stream named by ``(seed, *path)``: ``k = mix64(seed)``, then ``k = mix64(k ^ p)`` per part.

    Raises ``ValueError`` unless every part lies in ``[0, 2**64)``.
    """
    for part in (seed, *path):
        if not 0 <= part <= MASK64:
            raise ValueError(f"random stream parts must be integers in [0, 2**64), got {part}")
    key = splitmix64(seed)
    for part in path:  # a sponge: absorb, then permute (xor-ing mixed parts would make (1, 0) equal (0, 1))
        key = splitmix64(key ^ part)
    return key


def mix32_(x: Tensor, tmp: Tensor | None = None) -> Tensor:
    """Apply lowbias32 in place to an int64 tensor of values in ``[0, 2**32)``; returns ``x``.

    ``tmp`` (same shape and dtype) is scratch space, allocated when not given.
    """
    if tmp is None:
        tmp = torch.empty_like(x)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=tmp))
    x.mul_(_M1).bitwise_and_(MASK32)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=tmp))
    torch.bitwise_and(x, 1, out=tmp).bitwise_left_shift_(31)
    x.mul_(_M2_LOW).add_(tmp).bitwise_and_(MASK32)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=tmp))
    return x


def random_words(key: int, rows: Tensor, cols: Tensor) -> Tensor:
    """Random 32-bit words ``word(key, r, c)`` for every pair of ``rows`` [R] and ``cols`` [C].

    ``rows`` and ``cols`` are int64 tensors of values in ``[0, 2**32)`` on the device to compute on.
    Returns an int64 tensor [R, C] of values in ``[0, 2**32)``; entry ``[i, j]`` depends only on
    ``(key, rows[i], cols[j])``, never on which other rows or columns are asked for.
    """
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    k_lo, k_hi = key & MASK32, (key >> 32) & MASK32
    s = mix32_(torch.bitwise_xor(rows, k_lo))
    t = mix32_(torch.bitwise_xor(s, k_hi))
    words = torch.bitwise_xor(s.unsqueeze(1), cols.unsqueeze(0))
    tmp = torch.empty_like(words)
    mix32_(words, tmp)
    words.bitwise_xor_(t.unsqueeze(1))
    return mix32_(words, tmp)


def random_words_range(key: int, row_start: int, row_stop: int, n_cols: int, device: torch.device) -> Tensor:
    """:func:`random_words` for rows ``row_start..row_stop-1`` and columns ``0..n_cols-1``: int64 [R, n_cols]."""
    if row_stop > MASK32 + 1 or n_cols > MASK32 + 1:
        raise ValueError("a sketch block may have at most 2**32 rows and columns; split the gradient into more blocks")
    rows = torch.arange(row_start, row_stop, dtype=torch.int64, device=device)
    cols = torch.arange(n_cols, dtype=torch.int64, device=device)
    return random_words(key, rows, cols)


def stream_key(kind: str, seed: int, block: int, stream: int) -> int:
    """The key of one random stream of one sketch block: ``derive_key(seed, crc32(kind), block, stream)``.

    ``stream`` separates the independent draws of one block (e.g. the signs and the coordinate subset of the
    randomized Hadamard sketch); ``kind`` keeps two sketch kinds with the same seed independent.
    """
    return derive_key(seed, zlib.crc32(kind.encode()), block, stream)
