"""The dense Rademacher projection fused into one Triton kernel: signs generated in registers inside the matmul.

``out = x @ M`` with ``M[r, c] = ±scale`` where the sign of ``(r, c)`` is bit ``c % 32`` of ``word(key, r, c // 32)``
(:mod:`inflow.sketch.counter_rng`, :mod:`inflow.sketch.rademacher`): the same matrix, bit for bit, as the torch
path, so a store built on a GPU with this kernel holds the projection of the CPU's. ``M`` is never materialised:
each program computes one ``[BLOCK_B, 32 * BLOCK_W]`` output tile; per ``BLOCK_K`` rows of ``M`` it hashes
``BLOCK_K x BLOCK_W`` words (one per 32 signs: ``s_r`` and ``t_r`` once per row, two ``lowbias32`` per word),
expands their bits to ``±scale`` and feeds ``tl.dot`` — the TRAK ``fast_jl`` idea with our counter-based hash.

The torch path regenerates the ±1 matrix with elementwise tensor ops on every call (about 1.2 s per 256 rows of
a 1B model's gradient on an H200, issue 20); here hashing costs ``1/32`` of the matrix's entries and overlaps
the products. CPU tests run it under Triton's interpreter (``TRITON_INTERPRET=1``, set before this module is
imported); on a CPU without that, :func:`available` is False and the torch path is used.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:  # triton ships with CUDA builds of torch; the CPU wheel has none unless installed (the test extra has it)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_M1 = 0x7FEB352D
_M2 = 0x846CA68B


def available(x: Tensor) -> bool:
    """Whether the sketch should take this path for ``x``: triton importable and ``x`` on a CUDA device (the
    interpreter is for tests, which call :func:`project` directly)."""
    return triton is not None and x.is_cuda


if triton is not None:

    @triton.jit
    def _mix32(x):
        """lowbias32 on uint32 lanes (wrapping multiplies), as ``counter_rng.mix32_``."""
        x ^= x >> 16
        x = x * tl.cast(_M1, tl.uint32)
        x ^= x >> 15
        x = x * tl.cast(_M2, tl.uint32)
        x ^= x >> 16
        return x

    @triton.jit
    def _rademacher_kernel(x_ptr, out_ptr, n_rows, in_dim, out_dim, row_offset, stride_xb, stride_xk,
                           stride_ob, stride_on, key_lo, key_hi, scale,
                           BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
                           IEEE: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_n = tl.program_id(1)
        BLOCK_N: tl.constexpr = BLOCK_W * 32
        rows_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        words_idx = (pid_n * BLOCK_W + tl.arange(0, BLOCK_W)).to(tl.uint32)
        shifts = (tl.arange(0, BLOCK_N) % 32).to(tl.uint32)
        k_lo = tl.cast(key_lo, tl.uint32)
        k_hi = tl.cast(key_hi, tl.uint32)
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, in_dim, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rows_b[:, None] * stride_xb + ks[None, :] * stride_xk,
                        mask=(rows_b[:, None] < n_rows) & (ks[None, :] < in_dim), other=0.0)
            r = (ks + row_offset).to(tl.uint32)
            s = _mix32(r ^ k_lo)
            t = _mix32(s ^ k_hi)
            words = _mix32(_mix32(s[:, None] ^ words_idx[None, :]) ^ t[:, None])  # [BLOCK_K, BLOCK_W]
            expanded = tl.reshape(tl.broadcast_to(words[:, :, None], (BLOCK_K, BLOCK_W, 32)), (BLOCK_K, BLOCK_N))
            bits = (expanded >> shifts[None, :]) & 1
            signs = tl.where(bits == 1, scale, -scale).to(x.dtype)
            if IEEE:
                acc += tl.dot(x, signs, input_precision="ieee")
            else:
                acc += tl.dot(x, signs)
        tl.store(out_ptr + rows_b[:, None] * stride_ob + cols[None, :] * stride_on, acc,
                 mask=(rows_b[:, None] < n_rows) & (cols[None, :] < out_dim))


# Tile sizes of the sketch's calls: fixed, not autotuned, because a tile shape can change the order in which a
# product's terms are summed (BLOCK_K surely does), and a store's bits must not depend on which configuration a
# timing run happened to pick. `benchmarks/sketch.py --sweep` times the candidates on a GPU (and says which give
# the default's bits); set the fastest here with the figures in docs/benchmarks.md.
TILES = {"block_b": 64, "block_k": 32, "block_w": 2, "num_warps": 4, "num_stages": 3}


def project(x: Tensor, key: int, out_dim: int, scale: float, *, row_offset: int = 0,
            block_b: int = TILES["block_b"], block_k: int = TILES["block_k"], block_w: int = TILES["block_w"],
            num_warps: int = TILES["num_warps"], num_stages: int = TILES["num_stages"], ieee: bool = True) -> Tensor:
    """``x @ M[row_offset : row_offset + in_dim]``: [B, in_dim] -> [B, out_dim] float32, ``M`` the Rademacher
    matrix of ``key`` (:class:`~inflow.sketch.rademacher.RademacherSketch`), never materialised.

    ``x`` float32 (``ieee``: full-precision products; otherwise the GPU may use TF32) or bfloat16/float16
    (tensor-core products, float32 accumulation). ``block_*`` are the tile sizes: rows of ``x``, rows of ``M`` per
    step, 32-column words of ``M`` per output tile; all powers of two, ``block_k >= 16`` for ``tl.dot``;
    ``num_warps``, ``num_stages``: Triton's launch settings. Defaults: :data:`TILES`.
    """
    if triton is None:
        raise RuntimeError("the fused Rademacher kernel needs triton (pip install triton); use the torch path")
    assert x.dim() == 2, "x must be [B, in_dim]"
    n_rows, in_dim = x.shape
    out = torch.empty(n_rows, out_dim, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n_rows, block_b), triton.cdiv(out_dim, 32 * block_w))
    _rademacher_kernel[grid](x, out, n_rows, in_dim, out_dim, row_offset, x.stride(0), x.stride(1),
                             out.stride(0), out.stride(1), key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF, scale,
                             BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_W=block_w, IEEE=ieee, num_warps=num_warps,
                             num_stages=num_stages)
    return out
