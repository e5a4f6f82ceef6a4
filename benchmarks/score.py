"""Scoring throughput: LESS scores streamed over a gradient store, against a plain read of the same store.

A synthetic store of ``--rows`` unit rows of ``--dim`` fp16 features (default 1,000,000 x 8192; ``--quick``
16,384 x 8192) is built in a temporary directory with :meth:`inflow.store.GradientStore.write_chunk` (building
is not timed), then, each in a fresh child process so that one phase's memory does not count in another's:

- ``read``: every chunk read with ``GradientStore.read_chunk(c, verify=False)``, no compute (the floor);
- ``score``: :func:`inflow.methods.less.less_scores` against ``--targets`` target rows (one checkpoint, weight
  1.0, ``val_means = {"t": [array [targets, dim]]}``: 1,000 one-row subtasks, so the max over subtasks is
  the max over the target rows). The worst case: a [chunk, 8192] x [8192, 1000] matmul per chunk;
- ``score_subtasks``: the same target rows in ``--subtasks`` subtasks (default 57, as MMLU), LESS's own
  setting: the mean over a subtask is taken before the store is read, so each chunk meets a [8192, 57]
  matrix and scoring should run at the speed of reading;
- ``read_verify``: the same read with ``verify=True`` (what scoring does: it always verifies checksums).

The scoring child also times the fp32 matmul alone on one chunk held in memory and extrapolates it to the
whole store (``matmul_only_s``): the compute floor of scoring on this machine.

Phases alternate ``--repeats`` times (read, score, read_verify, ...) so the page cache treats them alike; the
median time of each is reported. ``ratio_vs_read`` = read time / scoring time (one-row subtasks),
``ratio_vs_read_subtasks`` the same with ``--subtasks`` subtasks; ``peak_rss_gib`` is the largest
peak RSS of a scoring child (its own ``VmHWM`` right after ``less_scores`` returns, imports included). The
temporary store is deleted at the end, also when a phase fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import GIB, apply_threads, machine, parser, peak_rss_gib, result_line

PHASES = ("read", "score", "score_subtasks", "read_verify")
MATMUL_PROBES = 8  # chunks timed in memory for the matmul-only floor
HEADROOM = 2 * GIB  # free space to leave on the disk beyond the store itself


def store_attrs(rows: int, dim: int, chunk_rows: int):
    """Attrs of a synthetic Adam-feature store (nothing in them is checked against a model)."""
    import inflow
    from inflow.store import StoreAttrs

    return StoreAttrs(model_id="synthetic", model_hash="synthetic", checkpoint="checkpoint-0", checkpoint_step=0,
                      lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"), feature_kind="adam",
                      sketch={"kind": "synthetic", "out_dim": dim}, dim=dim, dtype="float16", n_rows=rows,
                      chunk_rows=chunk_rows, data_hash="synthetic", code_version=inflow.__version__)


def build_store(path: Path, rows: int, dim: int, chunk_rows: int, seed: int) -> float:
    """Fill a store at ``path`` with Gaussian rows (stored unit-normalised, fp16); returns the seconds it took."""
    from inflow.store import GradientStore

    store = GradientStore.create_or_open(path, store_attrs(rows, dim, chunk_rows))
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for c in range(store.n_chunks):
        lo, hi = store.chunk_bounds(c)
        feats = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        store.write_chunk(c, feats, [f"ex{i:09d}" for i in range(lo, hi)])
        if c % max(1, store.n_chunks // 10) == 0:
            print(f"  built chunk {c + 1}/{store.n_chunks} ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_disk(parent: Path, rows: int, dim: int) -> None:
    """Refuse, with the numbers, when ``parent`` cannot hold an uncompressed store plus headroom."""
    need = rows * dim * 2 + rows * 64 + HEADROOM  # fp16 rows (random fp16 barely compresses), ids, norms
    free = shutil.disk_usage(parent).free
    if free < need:
        raise SystemExit(f"not enough free disk in {parent}: a {rows} x {dim} fp16 store needs about "
                         f"{need / GIB:.1f} GiB (with {HEADROOM / GIB:.0f} GiB headroom), {free / GIB:.1f} GiB free; "
                         "pass --dir on a larger disk or fewer --rows")


# ------------------------------------------------------------------------------------------------ child phases
def run_phase(phase: str, path: Path, targets: int, subtasks: int, seed: int) -> dict[str, float]:
    """One measured phase, in this (child) process: seconds and this process's peak RSS."""
    import torch

    from inflow.methods.less import less_scores, subtask_means
    from inflow.store import GradientStore

    store = GradientStore.open(path)
    if phase in ("score", "score_subtasks"):
        rng = np.random.default_rng(seed + 1)
        val = rng.standard_normal((targets, store.attrs.dim)).astype(np.float32)
        val /= np.linalg.norm(val, axis=1, keepdims=True)
        start = time.perf_counter()
        if phase == "score_subtasks":  # the subtask means are part of the work timed
            labels = [f"s{j % subtasks:03d}" for j in range(targets)]
            val = subtask_means(val, labels)[1]
        scores = less_scores([store], {"t": [val]}, np.array([1.0]), progress=False)
        seconds = time.perf_counter() - start
        assert scores["t"].shape == (store.attrs.n_rows,) and np.isfinite(scores["t"]).all()
        peak = peak_rss_gib()  # before the probe below allocates anything
        if phase == "score_subtasks":
            return {"seconds": seconds, "peak_rss_gib": peak, "threads": torch.get_num_threads()}
        # the compute floor: the same fp32 matmul on one chunk already in memory, extrapolated to every chunk
        feats = torch.from_numpy(store.read_chunk(0)[0])
        query = torch.from_numpy(val.T.copy())
        probes = min(store.n_chunks, MATMUL_PROBES)
        t0 = time.perf_counter()
        for _ in range(probes):
            (feats @ query).max(dim=1)
        matmul_s = (time.perf_counter() - t0) / probes * store.attrs.n_rows / feats.shape[0]
        return {"seconds": seconds, "matmul_s": matmul_s, "peak_rss_gib": peak, "threads": torch.get_num_threads()}
    else:
        verify = phase == "read_verify"
        start = time.perf_counter()
        for c in range(store.n_chunks):
            store.read_chunk(c, verify=verify)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_gib": peak_rss_gib(), "threads": torch.get_num_threads()}


def child(phase: str, path: Path, targets: int, subtasks: int, seed: int) -> dict[str, float]:
    """Run ``phase`` in a fresh interpreter (this script with ``--phase``) and return its JSON result."""
    cmd = [sys.executable, __file__, "--phase", phase, "--store", str(path), "--targets", str(targets),
           "--subtasks", str(subtasks), "--seed", str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, help="store rows (default 1,000,000; quick 16,384)")
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--chunk-rows", type=int, default=1024, help="rows per store chunk (features.chunk_rows)")
    p.add_argument("--targets", type=int, default=1000, help="target rows scored against")
    p.add_argument("--subtasks", type=int, default=57, help="subtasks of the target rows in score_subtasks")
    p.add_argument("--repeats", type=int, help="measured rounds of the three phases (default 1; quick 2)")
    p.add_argument("--dir", type=Path, help="where to create the temporary store (default: the system temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    apply_threads(args.threads)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.store, args.targets, args.subtasks, args.seed)))
        return

    rows = args.rows or (16_384 if args.quick else 1_000_000)
    repeats = args.repeats or (2 if args.quick else 1)
    parent = args.dir or Path(tempfile.gettempdir())
    check_disk(parent, rows, args.dim)
    tmp = Path(tempfile.mkdtemp(prefix="inflow-score-bench-", dir=parent))
    try:
        path = tmp / "pool.zarr"
        print(f"building a {rows} x {args.dim} fp16 store in {path} (chunks of {args.chunk_rows} rows); "
              f"{machine()}", flush=True)
        build_s = build_store(path, rows, args.dim, args.chunk_rows, args.seed)
        size = store_bytes(path)
        print(f"  built in {build_s:.0f} s, {size / GIB:.2f} GiB on disk "
              f"({size / (rows * args.dim * 2):.2f} of raw fp16)", flush=True)
        results: dict[str, list[dict[str, float]]] = {phase: [] for phase in PHASES}
        for rep in range(repeats):
            for phase in PHASES:
                results[phase].append(child(phase, path, args.targets, args.subtasks, args.seed))
                print(f"  round {rep + 1}/{repeats} {phase}: {results[phase][-1]['seconds']:.2f} s, "
                      f"peak RSS {results[phase][-1]['peak_rss_gib']:.2f} GiB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    sec = {phase: statistics.median(r["seconds"] for r in runs) for phase, runs in results.items()}
    gib = rows * args.dim * 2 / GIB  # decoded fp16 feature bytes per pass
    figures = {
        "ratio_vs_read": sec["read"] / sec["score"],
        "ratio_vs_read_subtasks": sec["read"] / sec["score_subtasks"],
        "peak_rss_gib": max(r["peak_rss_gib"] for phase in ("score", "score_subtasks") for r in results[phase]),
        "score_s": sec["score"],
        "score_subtasks_s": sec["score_subtasks"],
        "read_s": sec["read"],
        "read_verify_s": sec["read_verify"],
        "matmul_only_s": statistics.median(r["matmul_s"] for r in results["score"]),
        "score_rows_per_s": rows / sec["score"],
        "read_rows_per_s": rows / sec["read"],
        "score_gib_per_s": gib / sec["score"],
        "read_gib_per_s": gib / sec["read"],
        "read_peak_rss_gib": max(r["peak_rss_gib"] for r in results["read"]),
        "build_s": build_s,
        "store_gib": size / GIB,
        "rows": rows,
        "dim": args.dim,
        "targets": args.targets,
        "subtasks": args.subtasks,
        "chunk_rows": args.chunk_rows,
        "repeats": repeats,
        "threads": results["score"][0]["threads"],
        "quick": args.quick,
    }
    print(result_line(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
