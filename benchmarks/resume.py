"""Resume cost: extraction killed (SIGKILL) at 50% and resumed, against one uninterrupted extraction.

Setup (not timed), in a temporary directory: a synthetic chat pool, a BPE tokenizer trained on it
(:func:`inflow.models.tokenizer.train_tokenizer`), a random-init tiny Llama
(:func:`inflow.models.factory.build_tiny_model`, saved as a HF checkpoint), and a one-epoch LoRA warmup
(:func:`inflow.training.loop.train_lora`) that writes a HF-Trainer checkpoint with its AdamW state. Then a
:class:`inflow.pipeline.features.FeatureJob` for the pool (Adam features, Rademacher sketch, dim 8192).

Timed, each run a fresh ``python`` process (start-up, imports and model loading are real costs of a
restart and count in both): the worker calls ``extract_store(job, progress=False)`` (or, with a library that
lacks it, ``open_store(job)`` then ``extract_chunk(job, c)`` for every pending chunk, which is what it does).
The job keeps ``FeatureJob``'s own ``threads`` default.

- ``uninterrupted``: one worker on a fresh store, to completion;
- ``interrupted``: one worker on another fresh store, SIGKILLed as soon as half the chunks are marked done
  (the parent polls ``GradientStore.open(path).pending_chunks()``), then a second worker that resumes it.

The parent polls the store the same way during both runs. ``resume_overhead`` = (killed run + resumed run) /
uninterrupted run. The two finished stores are then compared row for row (``identical``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from _common import DEFAULT_SIZE, QUICK_SIZE, apply_threads, machine, parser, result_line

DRIVER, FALLBACK = "extract_store", "open_store+extract_chunk"
POLL_S = 0.1  # how often the parent looks at the store's done marks
WORDS = ("alpha beta gamma delta river stone cloud seven apple orange north south quick slow bright dark "
         "count sort reverse answer question number city market green blue small large first last").split()


# ------------------------------------------------------------------------------------------------ setup
def write_pool(path: Path, n: int, seed: int) -> None:
    """``n`` chat rows (user prompt, assistant answer) of random words, in the pool's JSONL shape."""
    rng = np.random.default_rng(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))).tolist())

    with path.open("w") as handle:
        for i in range(n):
            row = {"id": f"row{i:06d}", "dataset": "synthetic",
                   "messages": [{"role": "user", "content": text(15, 50)},
                                {"role": "assistant", "content": text(15, 50)}]}
            handle.write(json.dumps(row) + "\n")


def build_inputs(root: Path, rows: int, chunk_rows: int, batch_size: int, sketch_dim: int, size: dict,
                 seed: int) -> dict:
    """Pool, tokenizer + base model, warmup checkpoint under ``root``; returns the FeatureJob as a dict."""
    from inflow.config import LoraConfig, ModelConfig, TrainConfig
    from inflow.data.pool import load_pool, pool_texts
    from inflow.data.render import encode_pool
    from inflow.models.factory import build_tiny_model, save_model
    from inflow.models.loading import apply_lora, load_causal_lm
    from inflow.models.tokenizer import pad_token_id, train_tokenizer
    from inflow.pipeline.features import FeatureJob
    from inflow.training.loop import train_lora

    pool = root / "pool.jsonl"
    write_pool(pool, rows, seed)
    frame = load_pool(pool)
    tokenizer = train_tokenizer(pool_texts(frame, eos="</s>"), vocab_size=512)
    max_seq_len = 256
    model_dir = save_model(build_tiny_model(ModelConfig(seed=seed, **size), tokenizer, max_seq_len), tokenizer,
                           root / "model")
    encoded, _ = encode_pool(frame, tokenizer, max_seq_len)  # LESS labels (data.label_newline default)
    warm = TrainConfig(epochs=1, lr=1e-3, batch_size=8, seed=seed, lora=LoraConfig(r=8, dropout=0.0))
    model = apply_lora(load_causal_lm(model_dir), warm.lora)
    result = train_lora(model, encoded[: min(len(encoded), 32)], warm, pad_token_id(tokenizer), root / "warmup",
                        desc="warmup")
    job = FeatureJob(checkpoint=str(result.checkpoints[-1]), base_model=str(model_dir), split="pool", task=None,
                     store="", pool=str(pool), targets="", max_seq_len=max_seq_len, batch_size=batch_size,
                     chunk_rows=chunk_rows, dtype="float16", eps_inside_sqrt=True, sketch_kind="rademacher",
                     sketch_dim=sketch_dim, sketch_seed=0)
    return asdict(job)


# ------------------------------------------------------------------------------------------------ worker
def worker(job_json: str) -> None:
    """The extraction process: ``extract_store(job)`` where the library has it, else ``open_store(job)`` and
    ``extract_chunk(job, c)`` for every pending chunk (what ``extract_store`` does).

    Prints to stderr, one JSON line per event, the wall-clock time (``time.time()``) at which imports were done,
    (without ``extract_store``) the store was open (model, pool and sketch loaded), and the work finished.
    """
    from inflow.pipeline import features

    mark("imported", driver=DRIVER if hasattr(features, "extract_store") else FALLBACK)
    job = features.FeatureJob(**json.loads(job_json))
    if hasattr(features, "extract_store"):
        features.extract_store(job, progress=False)
    else:
        chunks = features.open_store(job)
        mark("opened")
        for chunk in chunks:
            features.extract_chunk(job, chunk)
    mark("finished")


def mark(event: str, **extra: str) -> None:
    print(json.dumps({"event": event, "time": time.time(), **extra}), file=sys.stderr, flush=True)


def marks(stderr: str) -> dict[str, dict]:
    """The worker's ``mark`` lines: {event: {"time": wall-clock time, ...}}."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith('{"event"'):
            item = json.loads(line)
            found[item.pop("event")] = item
    return found


def pending(path: str, cache: dict) -> list[int] | None:
    """The store's pending chunks, or None while it does not exist yet (or is mid-creation)."""
    from inflow.errors import InflowError
    from inflow.store import GradientStore

    try:
        if "store" not in cache:
            cache["store"] = GradientStore.open(path)
        return cache["store"].pending_chunks()
    except (InflowError, OSError, ValueError):  # not created yet, or a done mark caught mid-write
        cache.pop("store", None)
        return None


def run_worker(job: dict, kill_at: int | None) -> dict:
    """One worker process, SIGKILLed once ``kill_at`` chunks are done (None: run to the end).

    Returns ``seconds`` (wall, process start to exit), ``done`` (chunks done at exit), ``imports`` (process start
    to imports done), ``startup`` (process start to store open: imports, model, pool, sketch; NaN when the
    driver does not report it) and ``driver``.
    """
    cmd = [sys.executable, __file__, "--worker", json.dumps(job)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    wall_start = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cache: dict = {}
    while proc.poll() is None:
        time.sleep(POLL_S)
        left = pending(job["store"], cache)
        if kill_at is not None and left is not None and cache["store"].n_chunks - len(left) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
    seconds = time.perf_counter() - start
    _, err = proc.communicate()
    if kill_at is None and proc.returncode != 0:
        raise SystemExit(f"extraction worker failed ({proc.returncode}):\n{err[-3000:]}")
    found = marks(err)
    store = GradientStoreView(job["store"])
    return {"seconds": seconds, "done": store.n_chunks - len(store.pending),
            "imports": found["imported"]["time"] - wall_start,
            "startup": found.get("opened", {"time": float("nan")})["time"] - wall_start,
            "driver": found["imported"]["driver"]}


class GradientStoreView:
    """The store's chunk count and pending chunks, read once."""

    def __init__(self, path: str) -> None:
        from inflow.store import GradientStore

        store = GradientStore.open(path)
        self.n_chunks, self.pending = store.n_chunks, store.pending_chunks()


def read_store(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from inflow.store import GradientStore

    store = GradientStore.open(path)
    return store.read_all(), store.norms(), store.example_ids()


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, help="pool rows (default 1024; quick 256)")
    p.add_argument("--chunk-rows", type=int, help="rows per store chunk (default 64; quick 32)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sketch-dim", type=int, default=8192)
    p.add_argument("--repeats", type=int, help="measured (uninterrupted, interrupted) pairs (default 2; quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    apply_threads(args.threads)
    if args.worker:
        worker(args.worker)
        return

    rows = args.rows or (256 if args.quick else 1024)
    chunk_rows = args.chunk_rows or (32 if args.quick else 64)
    shape = QUICK_SIZE if args.quick else DEFAULT_SIZE  # the vocabulary comes from the tokenizer (512)
    size = dict(hidden_size=shape.hidden, num_layers=shape.layers, num_heads=shape.heads,
                intermediate_size=shape.intermediate)
    repeats = args.repeats or (1 if args.quick else 2)
    n_chunks = -(-rows // chunk_rows)
    tmp = Path(tempfile.mkdtemp(prefix="inflow-resume-bench-"))
    try:
        t0 = time.perf_counter()
        job = build_inputs(tmp, rows, chunk_rows, args.batch_size, args.sketch_dim, size, args.seed)
        print(f"setup {time.perf_counter() - t0:.1f} s: {rows} rows, chunks of {chunk_rows}, model {size}; "
              f"{machine()}", flush=True)
        subprocess.run([sys.executable, "-c", "import inflow.pipeline.features"], check=True)  # warm file cache
        plain: list[dict] = []
        interrupted: list[tuple[dict, dict]] = []
        for rep in range(repeats):
            order = ["uninterrupted", "interrupted"]
            for kind in order if rep % 2 == 0 else order[::-1]:  # alternate the order between pairs
                store = str(tmp / f"{kind}-{rep}.zarr")
                if kind == "uninterrupted":
                    plain.append(run_worker(dict(job, store=store), None))
                    print(f"  uninterrupted: {plain[-1]['seconds']:.2f} s", flush=True)
                else:
                    first = run_worker(dict(job, store=store), n_chunks // 2)
                    second = run_worker(dict(job, store=store), None)
                    interrupted.append((first, second))
                    print(f"  interrupted: killed after {first['seconds']:.2f} s with {first['done']}/{n_chunks} "
                          f"chunks done, resumed in {second['seconds']:.2f} s", flush=True)
        a, b = read_store(str(tmp / "uninterrupted-0.zarr")), read_store(str(tmp / "interrupted-0.zarr"))
        identical = bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    runs = plain + [run for pair in interrupted for run in pair]
    uninterrupted_s = statistics.median(r["seconds"] for r in plain)
    interrupted_s = statistics.median(a["seconds"] + b["seconds"] for a, b in interrupted)
    figures = {
        "resume_overhead": interrupted_s / uninterrupted_s,
        "overhead_s": interrupted_s - uninterrupted_s,
        "uninterrupted_s": uninterrupted_s,
        "killed_s": statistics.median(a["seconds"] for a, _ in interrupted),
        "resumed_s": statistics.median(b["seconds"] for _, b in interrupted),
        "imports_s": statistics.median(r["imports"] for r in runs),
        "chunks_done_at_kill": min(a["done"] for a, _ in interrupted),
        "chunks": n_chunks,
        "identical": identical,
        "rows": rows,
        "extract_threads": job.get("threads", "n/a"),
        "driver": runs[0]["driver"],
        "repeats": repeats,
        "quick": args.quick,
    }
    if all(r["startup"] == r["startup"] for r in runs):  # reported by the fallback driver only (NaN otherwise)
        figures["startup_s"] = statistics.median(r["startup"] for r in runs)
    print(result_line(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
