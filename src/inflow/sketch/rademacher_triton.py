"""The dense Rademacher projection fused into one Triton kernel: signs generated in registers inside the matmul.

``out = x @ M`` with ``M[r, c] = ±scale`` where the sign of ``(r, c)`` is bit ``c % 32`` of ``word(key, r, c // 32)``
(:mod:`inflow.sketch.counter_rng`, :mod:`inflow.sketch.rademacher`): the same matrix, bit for bit, as the torch
path, so a store built on a GPU with this kernel holds the projection of the CPU's. ``M`` is never materialised:
each program computes one ``[BLOCK_B, 32 * BLOCK_W]`` output tile; per ``BLOCK_K`` rows of ``M`` it hashes
``BLOCK_K x BLOCK_W`` words (one per 32 signs: ``s_r`` and ``t_r`` once per row, two ``lowbias32`` per word),
expands their bits to ``±scale`` and feeds ``tl.dot`` — the TRAK ``fast_jl`` idea with our counter-based hash.

The tile's signs are built transposed and bit-major, ``T[j, k]`` for ``j = bit * BLOCK_W + word``: Triton spreads
a tile's fastest axis (``k``) over a warp's lanes and repeats the slow one in registers, so one thread holds the
signs of one word and hashes it once (built as ``[BLOCK_K, 32 * BLOCK_W]`` in natural order, each register held a
sign of another word and the compiler hashed every sign's word anew: 35 instructions per sign on sm_90 against
5.5 in this layout, ``benchmarks/sketch_sass.py --natural``). ``tl.trans(T)`` is also the k-major operand that TF32
tensor-core products read. Output column ``j`` of the tile is natural column ``(j % BLOCK_W) * 32 + j // BLOCK_W``;
the store puts it there. Every output is the same sum, in the same order, as with natural columns.

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


def available(x: Tensor) -> bool:
    """Whether the sketch should take this path for ``x``: triton importable and ``x`` on a CUDA device (the
    interpreter is for tests, which call :func:`project` directly)."""
    return triton is not None and x.is_cuda


if triton is not None:
    # lowbias32's multipliers: a compiled kernel may read a global only as a constexpr (the interpreter would take
    # a plain int; tests/sketch/test_rademacher_triton.py compiles for sm_90 to catch what only a GPU would)
    _M1 = tl.constexpr(0x7FEB352D)
    _M2 = tl.constexpr(0x846CA68B)

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
        j = tl.arange(0, BLOCK_N)  # the tile's column j: bit j // BLOCK_W of word j % BLOCK_W
        cols = pid_n * BLOCK_N + (j % BLOCK_W) * 32 + j // BLOCK_W
        words_idx = (pid_n * BLOCK_W + tl.arange(0, BLOCK_W)).to(tl.uint32)
        shifts = tl.arange(0, 32).to(tl.uint32)
        k_lo = tl.cast(key_lo, tl.uint32)
        k_hi = tl.cast(key_hi, tl.uint32)
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        # offsets in int64: a group's rows may span more than 2**31 elements (int32 would wrap past the tensor)
        x_rows = x_ptr + rows_b[:, None].to(tl.int64) * stride_xb  # [BLOCK_B, 1] pointers to the rows
        for k0 in range(0, in_dim, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_rows + ks[None, :].to(tl.int64) * stride_xk,
                        mask=(rows_b[:, None] < n_rows) & (ks[None, :] < in_dim), other=0.0)
            r = (ks + row_offset).to(tl.uint32)
            s = _mix32(r ^ k_lo)
            t = _mix32(s ^ k_hi)
            words = _mix32(_mix32(s[None, :] ^ words_idx[:, None]) ^ t[None, :])  # [BLOCK_W, BLOCK_K]
            bits = (words[None, :, :] >> shifts[:, None, None]) & 1  # [32, BLOCK_W, BLOCK_K]
            signs_t = tl.where(tl.reshape(bits, (BLOCK_N, BLOCK_K)) == 1, scale, -scale).to(x.dtype)
            if IEEE:
                acc += tl.dot(x, tl.trans(signs_t), input_precision="ieee")
            else:
                acc += tl.dot(x, tl.trans(signs_t))
        tl.store(out_ptr + rows_b[:, None].to(tl.int64) * stride_ob + cols[None, :] * stride_on, acc,
                 mask=(rows_b[:, None] < n_rows) & (cols[None, :] < out_dim))


# Tile sizes of the sketch's calls: fixed, not autotuned, because a tile shape can change the order in which a
# product's terms are summed (BLOCK_K surely does), and a store's bits must not depend on which configuration a
# timing run happened to pick. `benchmarks/sketch.py --sweep` times the candidates on a GPU (and says which give
# the default's bits); set the fastest here with the figures in docs/benchmarks.md. Until a GPU has timed them,
# the choice is the static one of `benchmarks/sketch_sass.py --grid` (sm_90 SASS). Tensor-core products (TF32,
# bfloat16, float16): 64 x 128 tiles issue a step's instructions in 0.68 of the cycles its products take (64 x 64:
# 1.10, so sign generation bounds them), keep 4 programs per SM, and waste no product on calls of 64 rows or fewer
# (128-row tiles: 0.40, 2 programs). IEEE float32 products are FFMA on the CUDA cores, with the accumulator and
# both operands in registers: every tile of the grid spills (328 to 9,984 bytes) but 64 x 64 with 8 warps.
# Both keep BLOCK_K = 32, so each output's terms are summed in the order they were before these tiles.
TILES = {"block_b": 64, "block_k": 32, "block_w": 4, "num_warps": 4, "num_stages": 3}
IEEE_TILES = {"block_b": 64, "block_k": 32, "block_w": 2, "num_warps": 8, "num_stages": 3}


def tiles_for(dtype: torch.dtype, ieee: bool, **overrides: int) -> dict[str, int]:
    """The fixed tiles of a call: :data:`IEEE_TILES` for float32 ``x`` with ``ieee`` products, else :data:`TILES`;
    ``overrides`` replace some of them (a benchmark's sweep), and a setting neither has is refused."""
    tiles = dict(IEEE_TILES if ieee and dtype == torch.float32 else TILES)
    if unknown := set(overrides) - set(tiles):
        raise TypeError(f"unknown tile settings {sorted(unknown)}: use {sorted(tiles)}")
    return tiles | overrides


def project(x: Tensor, key: int, out_dim: int, scale: float, *, row_offset: int = 0, ieee: bool = True,
            kernel=None, **tiles: int) -> Tensor:  # noqa: ANN001
    """``x @ M[row_offset : row_offset + in_dim]``: [B, in_dim] -> [B, out_dim] float32, ``M`` the Rademacher
    matrix of ``key`` (:class:`~inflow.sketch.rademacher.RademacherSketch`), never materialised.

    ``x`` float32 (``ieee``: full-precision products; otherwise the GPU may use TF32) or bfloat16/float16
    (tensor-core products, float32 accumulation). ``tiles`` overrides :func:`tiles_for`'s: ``block_b``,
    ``block_k``, ``block_w`` (rows of ``x``, rows of ``M`` per step, 32-column words of ``M`` per output tile; all
    powers of two, ``block_k >= 16`` for ``tl.dot``), ``num_warps``, ``num_stages`` (Triton's launch settings).
    ``kernel``: another ``@triton.jit`` function with this kernel's arguments (a benchmark's variant).
    """
    if triton is None:
        raise RuntimeError("the fused Rademacher kernel needs triton (pip install triton); use the torch path")
    assert x.dim() == 2, "x must be [B, in_dim]"
    chosen = tiles_for(x.dtype, ieee, **tiles)
    n_rows, in_dim = x.shape
    out = torch.empty(n_rows, out_dim, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n_rows, chosen["block_b"]), triton.cdiv(out_dim, 32 * chosen["block_w"]))
    kernel = _rademacher_kernel if kernel is None else kernel
    kernel[grid](x, out, n_rows, in_dim, out_dim, row_offset, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
                 key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF, scale, BLOCK_B=chosen["block_b"],
                 BLOCK_K=chosen["block_k"], BLOCK_W=chosen["block_w"], IEEE=ieee, num_warps=chosen["num_warps"],
                 num_stages=chosen["num_stages"])
    return out


_TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def compile_ahead(dtype: torch.dtype = torch.float32, *, ieee: bool = True, capability: int = 90, kernel=None,
                  **tiles: int):  # noqa: ANN001, ANN201
    """Compile the kernel for a CUDA GPU of compute ``capability`` (90: H100/H200) on any machine, no GPU or driver
    needed (Triton's compiler and its bundled ``ptxas``): what :func:`project` would build there for contiguous
    ``x`` of ``dtype`` whose widths are multiples of 16 (Triton specialises arguments equal to 1 as constants and
    marks multiples of 16). Returns Triton's ``CompiledKernel``: ``.metadata.shared`` (bytes of shared memory),
    ``.asm["ttgir"|"ptx"|"cubin"]``. ``tiles``: as :func:`project`'s. ``kernel``: another ``@triton.jit``
    function with this kernel's arguments (a benchmark's variant; default: this module's kernel).

    Catches before a GPU session what the interpreter cannot: code that only compiled kernels reject, tiles that
    overflow shared memory, and (``benchmarks/sketch_sass.py``) the machine code's cost per sign. Not under
    ``TRITON_INTERPRET=1``, where the kernel is an interpreted function.
    """
    if triton is None:
        raise RuntimeError("compiling the fused Rademacher kernel needs triton (pip install triton)")
    if INTERPRET:
        raise RuntimeError("TRITON_INTERPRET=1 makes the kernel an interpreted function: compile ahead in a process "
                           "without it (env -u TRITON_INTERPRET ...)")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if dtype not in _TRITON_TYPES:
        raise ValueError(f"dtype {dtype} is not one the kernel takes: use one of {sorted(map(str, _TRITON_TYPES))}")
    ints = ("n_rows", "in_dim", "out_dim", "row_offset", "stride_xb", "stride_ob", "key_lo", "key_hi")
    signature = {"x_ptr": "*" + _TRITON_TYPES[dtype], "out_ptr": "*fp32", **dict.fromkeys(ints, "i32"),
                 "scale": "fp32", "stride_xk": "constexpr", "stride_on": "constexpr",
                 **dict.fromkeys(("BLOCK_B", "BLOCK_K", "BLOCK_W", "IEEE"), "constexpr")}
    chosen = tiles_for(dtype, ieee, **tiles)
    constants = {"stride_xk": 1, "stride_on": 1, "BLOCK_B": chosen["block_b"], "BLOCK_K": chosen["block_k"],
                 "BLOCK_W": chosen["block_w"], "IEEE": ieee}
    kernel = _rademacher_kernel if kernel is None else kernel
    names = kernel.arg_names
    signature = {name: signature[name] for name in names}  # Triton wants the kernel's argument order
    divisible = ("x_ptr", "out_ptr", "in_dim", "out_dim", "stride_xb", "stride_ob")
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": chosen["num_warps"], "num_stages": chosen["num_stages"]})
