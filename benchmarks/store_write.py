"""What one chunk's write costs: ``GradientStore.write_chunk`` (normalise, compress, write, read back, checksum,
mark done) for ``--rows`` rows of ``--dim`` features, per store dtype.

This is the time a chunk's write held the GPU while chunk extractions took turns (the write was inside the turn
until 2026-12-01); now it overlaps the next chunk's gradients (``inflow.pipeline.stores``). Random rows, so the
compressor finds little to squeeze, as with real sketched gradients.

    python benchmarks/store_write.py                 # 1,024 x 8,192, float16 and float32, 5 chunks each
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np

from _common import apply_threads, machine, parser, result_line
from inflow.store import GradientStore, StoreAttrs


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, help="rows per chunk (default 1024, features.chunk_rows; quick 128)")
    p.add_argument("--dim", type=int, default=8192, help="features per row (default 8192, sketch.dim)")
    p.add_argument("--chunks", type=int, default=5, help="chunks written per dtype; the median is reported")
    args = p.parse_args(argv)
    apply_threads(args.threads)
    rows = args.rows or (128 if args.quick else 1024)
    features = np.random.default_rng(0).standard_normal((rows, args.dim), dtype=np.float32)
    print(machine())
    for dtype in ("float16", "float32"):
        attrs = StoreAttrs(model_id="bench", model_hash="-", checkpoint="-", checkpoint_step=0,
                           lora_targets=("q_proj",), feature_kind="sgd", sketch={}, dim=args.dim, dtype=dtype,
                           n_rows=args.chunks * rows, chunk_rows=rows, data_hash="-", code_version="-")
        with tempfile.TemporaryDirectory() as tmp:
            store = GradientStore.create_or_open(f"{tmp}/store.zarr", attrs)
            seconds = []
            for chunk in range(args.chunks):
                ids = [f"row-{i}" for i in range(chunk * rows, (chunk + 1) * rows)]
                start = time.perf_counter()
                store.write_chunk(chunk, features, ids)
                seconds.append(time.perf_counter() - start)
            assert store.pending_chunks() == []
        median = statistics.median(seconds)
        print(result_line({"dtype": dtype, "rows": rows, "dim": args.dim, "write_s": median,
                           "mb_per_s": features.nbytes / median / 1e6, "chunks": args.chunks}))


if __name__ == "__main__":
    main()
