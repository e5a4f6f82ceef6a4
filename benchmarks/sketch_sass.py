"""The fused Rademacher kernel's machine code for a GPU that is not here: per tile configuration, what one step of
its main loop costs on sm_90 (H100/H200), read from the SASS that Triton's compiler and ptxas build on any machine.

    python benchmarks/sketch_sass.py                      # the default tiles, TF32 products (bf16 extraction)
    python benchmarks/sketch_sass.py --grid --natural     # the sweep's grid; and the natural-layout kernel beside it
    python benchmarks/sketch_sass.py --dtype bf16 --ieee  # bfloat16 inputs; IEEE float32 products

Per configuration: shared memory, registers, spills (stack and local bytes), the loop's instructions per warp, the
tensor-core multiply-adds it issues, instructions per generated sign, and a static bound: the cycles an SM needs to
*issue* a step of every resident program (4 schedulers, one warp instruction each per cycle) against the cycles its
tensor cores need for their products (dense, per SM and cycle: sm_90 2,048 bf16 or 1,024 TF32 multiply-adds, sm_80
half that). A ratio above 1 says the sign generation, not the products, bounds the kernel. It is a model, not a
timing: latency, memory and the scheduler's overlap are only measured on a GPU (``benchmarks/sketch.py --sweep``).

``--natural`` compiles the layout this kernel had before (signs built in natural column order, ``[BLOCK_K, N]``):
there each register holds a sign of another word and the compiler hashes every sign's word anew.
Needs triton (the test extra) and a process without ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import collections
import itertools
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl

from _common import parser, result_line
from inflow.sketch import rademacher_triton

_mix32 = rademacher_triton._mix32  # the kernel's hash, for the natural-layout variant below
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
# per compute capability: dense tensor-core multiply-adds per cycle per SM (bf16, tf32); registers, shared bytes
# (1 KiB of it reserved per program) and programs an SM holds (NVIDIA's tuning guides for A100, H100)
SM = {80: {"bf16": 1024, "tf32": 512, "registers": 65536, "shared": 167936, "programs": 32},
      90: {"bf16": 2048, "tf32": 1024, "registers": 65536, "shared": 233472, "programs": 32}}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@triton.jit
def natural_kernel(x_ptr, out_ptr, n_rows, in_dim, out_dim, row_offset, stride_xb, stride_xk, stride_ob, stride_on,
                   key_lo, key_hi, scale, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
                   IEEE: tl.constexpr):
    """The same product with the sign tile ``[BLOCK_K, 32 * BLOCK_W]`` in natural column order (the kernel's first
    layout): the words ``[BLOCK_K, BLOCK_W]`` broadcast over the 32 bits of each."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    BLOCK_N: tl.constexpr = BLOCK_W * 32
    rows_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    words_idx = (pid_n * BLOCK_W + tl.arange(0, BLOCK_W)).to(tl.uint32)
    shifts = (tl.arange(0, BLOCK_N) % 32).to(tl.uint32)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    x_rows = x_ptr + rows_b[:, None].to(tl.int64) * stride_xb  # int64 offsets, as the kernel's
    for k0 in range(0, in_dim, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_rows + ks[None, :].to(tl.int64) * stride_xk,
                    mask=(rows_b[:, None] < n_rows) & (ks[None, :] < in_dim), other=0.0)
        s = _mix32((ks + row_offset).to(tl.uint32) ^ tl.cast(key_lo, tl.uint32))
        t = _mix32(s ^ tl.cast(key_hi, tl.uint32))
        words = _mix32(_mix32(s[:, None] ^ words_idx[None, :]) ^ t[:, None])
        expanded = tl.reshape(tl.broadcast_to(words[:, :, None], (BLOCK_K, BLOCK_W, 32)), (BLOCK_K, BLOCK_N))
        signs = tl.where(((expanded >> shifts[None, :]) & 1) == 1, scale, -scale).to(x.dtype)
        if IEEE:
            acc += tl.dot(x, signs, input_precision="ieee")
        else:
            acc += tl.dot(x, signs)
    tl.store(out_ptr + rows_b[:, None].to(tl.int64) * stride_ob + cols[None, :] * stride_on, acc,
             mask=(rows_b[:, None] < n_rows) & (cols[None, :] < out_dim))


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="the sketch's input (default fp32)")
    p.add_argument("--ieee", action="store_true", help="IEEE float32 products (default: TF32, as bf16 extraction)")
    p.add_argument("--grid", action="store_true", help="every configuration of benchmarks/sketch.py --sweep's grid")
    p.add_argument("--natural", action="store_true", help="also the natural-layout kernel, side by side")
    p.add_argument("--capability", type=int, choices=sorted(SM), default=90,
                   help="CUDA compute capability to compile for (default 90: H100/H200; 80: A100)")
    args = p.parse_args(argv)
    default = rademacher_triton.tiles_for(DTYPES[args.dtype], args.ieee)
    configs = tile_grid(default) if args.grid else [default]
    kernels = {"ours": None} | ({"natural": natural_kernel} if args.natural else {})
    for tiles in configs:
        figures = {}
        for name, kernel in kernels.items():
            figures[name] = loop_figures(rademacher_triton.compile_ahead(
                DTYPES[args.dtype], ieee=args.ieee, capability=args.capability, kernel=kernel, **tiles), tiles,
                args.dtype, SM[args.capability])
            print(result_line({"kernel": name, **tiles, **figures[name]}), flush=True)
        if args.natural:
            ratio = figures["natural"]["instructions_per_sign"] / figures["ours"]["instructions_per_sign"]
            print(result_line({**tiles, "natural_over_ours_instructions_per_sign": ratio}))


def tile_grid(default: dict[str, int]) -> list[dict[str, int]]:
    """The tile configurations a sweep tries (``sketch.py --sweep`` times them, ``--grid`` here compiles them):
    ``default`` first, then the rest of a 32-point grid of block_b, block_k, block_w, num_warps, num_stages."""
    keys = ("block_b", "block_k", "block_w", "num_warps", "num_stages")
    grid = [dict(zip(keys, c)) for c in itertools.product((64, 128), (32, 64), (2, 4), (4, 8), (3, 4))]
    return [default] + [tiles for tiles in grid if tiles != default]


def loop_figures(compiled, tiles: dict[str, int], dtype: str, sm: dict[str, int]) -> dict[str, object]:  # noqa: ANN001
    """What one step of the compiled kernel's main loop (``BLOCK_K`` rows of ``M``) costs on an SM with the rates
    and sizes ``sm`` (one of :data:`SM`): see the module doc."""
    sass, resources = disassemble(compiled.asm["cubin"])
    body = main_loop(sass)
    ops = collections.Counter(_opcode(line) for line in body)
    warps = tiles["num_warps"]
    macs = sum(_macs(line, warps) for line in body)
    signs = tiles["block_k"] * tiles["block_w"] * 32
    threads = warps * 32
    programs = min(sm["registers"] // (resources["REG"] * threads), sm["shared"] // (compiled.metadata.shared + 1024),
                   sm["programs"])
    issue = len(body) * warps / 4  # cycles to issue one program's step, the SM's 4 schedulers all busy
    rate = sm["tf32" if dtype == "fp32" else dtype]
    return {"shared_bytes": compiled.metadata.shared, "registers": resources["REG"],
            "spill_bytes": resources["STACK"] + resources["LOCAL"],
            "programs_per_sm": programs, "loop_instructions": len(body), "instructions_per_sign":
            len(body) * threads / signs, "tensor_macs": macs,
            "issue_over_tensor_cycles": issue / (macs / rate) if macs else "n/a",  # n/a: FFMA products
            "top": ",".join(f"{op}:{n}" for op, n in ops.most_common(4))}


def disassemble(cubin: bytes) -> tuple[list[str], dict[str, int]]:
    """The SASS lines (``nvdisasm``) and resource counts (``cuobjdump -res-usage``: REG, SHARED, LOCAL, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        sass = _tool("nvdisasm", "-c", str(path)).splitlines()
        usage = _tool("cuobjdump", "-res-usage", str(path))
    return sass, {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", usage.split("Function", 1)[-1])}


def main_loop(sass: list[str]) -> list[str]:
    """The instructions of the largest loop: from a label to the last branch back to it."""
    labels = {line.strip().rstrip(":"): i for i, line in enumerate(sass) if re.match(r"^\.L_x_\d+:", line)}
    start, stop = 0, -1
    for i, line in enumerate(sass):
        target = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if target and labels.get(target.group(1), i) < i and i - labels[target.group(1)] > stop - start:
            start, stop = labels[target.group(1)], i
    if stop < 0:
        raise RuntimeError("no loop found in the kernel's SASS: has the kernel's structure changed?")
    return [line for line in sass[start:stop + 1] if re.search(r"/\*[0-9a-f]{4,}\*/", line)]


def _opcode(line: str) -> str:
    return re.search(r"\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z0-9_]+)", line).group(1)


def _macs(line: str, warps: int) -> int:
    """Multiply-adds a program issues with this instruction: a warpgroup's HGMMA MxNxK, or every warp's HMMA."""
    if m := re.search(r"HGMMA\.(\d+)x(\d+)x(\d+)", line):
        return int(m[1]) * int(m[2]) * int(m[3]) * warps // 4
    if m := re.search(r"HMMA\.(\d\d)(\d)(\d+)", line):
        return int(m[1]) * int(m[2]) * int(m[3]) * warps
    return 0


def _tool(name: str, *args: str) -> str:
    return subprocess.run([str(TOOLS / name), *args], capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    main()
