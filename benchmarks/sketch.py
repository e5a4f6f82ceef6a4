"""Dense Rademacher projection: the torch path (signs regenerated with tensor ops, pieces cached) against the fused
Triton kernel (signs generated in registers inside the matmul), side by side on one device.

``--rows`` rows of ``--in-dim`` float32 features (default 256 x 1,048,576: a 1B model's LoRA r=8 gradient on q,k,v,o
is about this wide) projected to ``--dim`` (default 8192). Each path runs ``--repeats`` times after one warm-up
call; the median is reported with its TFLOP/s (2 * rows * in_dim * dim per call) and the fused/torch speed ratio.
On a CPU (no triton or no CUDA) only the torch path runs and ``fused_s`` is ``n/a``. The torch path's piece cache
is off (``PieceCache(0)``), as in a features run whose budget the block does not fit.

    python benchmarks/sketch.py --device cuda            # an H200: the issue-20 figure
    python benchmarks/sketch.py --quick                  # CPU, under a minute
    python benchmarks/sketch.py --device cuda --sweep    # time the kernel's tile configurations

On CUDA it also times the kernel's former sign layout (``natural_s``, ``natural_over_fused``; ``natural_same_bits``:
whether the two give the same output bit for bit, as they should: same sums, same order).

``--sweep`` (CUDA) times the fused kernel at every tile configuration of a small grid and prints them fastest first,
each with ``same_bits``: whether its output equals the default configuration's bit for bit (a tile shape can
change the summation order; the sketch uses fixed tiles, ``rademacher_triton.tiles_for``, so stores never depend on
a timing run).
"""

from __future__ import annotations

import statistics

import torch

from _common import apply_threads, device_sync, machine, parser, result_line, timed
from inflow.devices import resolve_device
from inflow.sketch import rademacher_triton
from inflow.sketch.block import allocate_dims
from inflow.sketch.cache import PieceCache
from inflow.sketch.rademacher import RademacherSketch


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, help="rows per call (default 256; quick 32)")
    p.add_argument("--in-dim", type=int, help="gradient width (default 1048576; quick 65536)")
    p.add_argument("--dim", type=int, help="sketch dimension (default 8192; quick 1024)")
    p.add_argument("--blocks", type=int, default=1,
                   help="split the gradient into this many equal blocks, projected one call each to their share of "
                        "--dim, as the features stage's block sketch does (a model's layers; default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tf32", action="store_true", help="let the fused kernel use TF32 products (not IEEE fp32)")
    p.add_argument("--sweep", action="store_true", help="time the fused kernel's tile configurations (CUDA)")
    args = p.parse_args()
    apply_threads(args.threads)
    rows = args.rows or (32 if args.quick else 256)
    in_dim = args.in_dim or (65536 if args.quick else 1048576)
    dim = args.dim or (1024 if args.quick else 8192)
    if not 1 <= args.blocks <= min(in_dim, dim):
        p.error(f"--blocks must be between 1 and min(--in-dim, --dim) = {min(in_dim, dim)}")
    device = resolve_device(args.device, "--device")
    sync = device_sync(device)
    x = torch.randn(rows, in_dim, device=device)
    blocks = Blocks(in_dim, dim, args.blocks)
    ieee = not args.tf32

    def run(fn) -> float:
        fn()
        sync()
        times = []
        for _ in range(args.repeats):
            seconds, _ = timed(lambda: (fn(), sync()))
            times.append(seconds)
        return statistics.median(times)

    def torch_path() -> torch.Tensor:  # the piece walk, whatever the device (the sketch itself would fuse on CUDA)
        return blocks.project(x, _piece_walk)

    def fused(**tiles: object) -> torch.Tensor:
        return blocks.project(x, lambda xb, sk: rademacher_triton.project(xb, sk.key, sk.out_dim, sk.scale,
                                                                          ieee=ieee, **tiles))

    torch_s = run(torch_path)
    figures: dict[str, object] = {"rows": rows, "in_dim": in_dim, "dim": dim, "blocks": args.blocks,
                                  "torch_s": torch_s, "torch_tflops": blocks.flop(rows) / torch_s / 1e12}
    if args.sweep:
        return sweep(x, fused, blocks.flop(rows), run, ieee, args.blocks)
    if rademacher_triton.available(x):
        gap = (fused() - torch_path()).abs().max().item() / torch_path().abs().max().item()
        fused_s = run(fused)
        figures |= {"fused_s": fused_s, "fused_tflops": blocks.flop(rows) / fused_s / 1e12,
                    "speedup": torch_s / fused_s, "max_rel_gap": gap}
        # the kernel's former layout (signs in natural column order: a hash per sign), same tiles: what the
        # transposed bit-major layout gains, timed (benchmarks/sketch_sass.py counts it in the machine code)
        from sketch_sass import natural_kernel

        natural = lambda: fused(kernel=natural_kernel)  # noqa: E731
        natural_s = run(natural)
        figures |= {"natural_s": natural_s, "natural_over_fused": natural_s / fused_s,
                    "natural_same_bits": torch.equal(natural(), fused())}
    else:
        figures |= {"fused_s": "n/a"}
    print(machine())
    print(result_line(figures))


class Blocks:
    """``in_dim`` split into ``n`` equal blocks (the first ``in_dim % n`` one wider), each projected by its own
    Rademacher matrix to its share of ``dim`` (``allocate_dims``): the calls the block sketch makes."""

    def __init__(self, in_dim: int, dim: int, n: int) -> None:
        sizes = [in_dim // n + (b < in_dim % n) for b in range(n)]
        self.sketches = [RademacherSketch(seed=0, block=b, in_dim=size, out_dim=d, cache=PieceCache(0))
                         for b, (size, d) in enumerate(zip(sizes, allocate_dims(sizes, dim)))]

    def flop(self, rows: int) -> float:
        """Multiply-adds times 2 of one projection of ``rows`` rows: ``2 * rows * sum(D_b * d_b)``."""
        return 2.0 * rows * sum(sk.in_dim * sk.out_dim for sk in self.sketches)

    def project(self, x: torch.Tensor, one) -> torch.Tensor:  # noqa: ANN001
        """``[x_1 M_1, ..., x_n M_n]``, each block by ``one(x_b, sketch_b)``: [rows, sum(d_b)]."""
        out, start = [], 0
        for sk in self.sketches:
            out.append(one(x[:, start:start + sk.in_dim], sk))
            start += sk.in_dim
        return torch.cat(out, dim=1)


def _piece_walk(x: torch.Tensor, sketch: RademacherSketch) -> torch.Tensor:
    """The torch path's product, piece by piece of expanded signs."""
    out = torch.zeros(x.shape[0], 32 * sketch.n_words, dtype=x.dtype, device=x.device)
    for start in range(0, sketch.in_dim, sketch.piece_rows):
        stop = min(start + sketch.piece_rows, sketch.in_dim)
        out.addmm_(x[:, start:stop], sketch.matrix_rows(start, stop, x.dtype, x.device))
    return out[:, :sketch.out_dim]


def sweep(x: torch.Tensor, fused, flop: float, run, ieee: bool, n_blocks: int) -> None:  # noqa: ANN001
    """Every configuration of a small grid, fastest first, with its TFLOP/s and whether it gives the default's bits."""
    if not rademacher_triton.available(x):
        print("--sweep needs a CUDA device with triton")
        return
    reference = fused()
    rows = []
    from sketch_sass import tile_grid

    default = rademacher_triton.tiles_for(x.dtype, ieee)
    for tiles in tile_grid(default):  # the default first
        try:
            out = fused(**tiles)
            seconds = run(lambda: fused(**tiles))
        except Exception as error:  # noqa: BLE001 (a configuration that does not fit the GPU's shared memory)
            print(f"  {tiles}: failed ({type(error).__name__})")
            continue
        rows.append((seconds, tiles, torch.equal(out, reference)))
        print(result_line({**tiles, "seconds": seconds, "same_bits": rows[-1][2]}), flush=True)  # as it goes
    print(machine(), f"- {x.shape[0]} rows x {x.shape[1]} in {n_blocks} block(s), fastest first:")
    for seconds, tiles, same in sorted(rows, key=lambda r: r[0]):
        marker = " (default)" if tiles == default else ""
        print(result_line({**tiles, "seconds": seconds, "tflops": flop / seconds / 1e12, "same_bits": same}) + marker)


if __name__ == "__main__":
    main()
