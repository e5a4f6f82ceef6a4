"""Influence Distillation against LESS end to end, at three pool sizes, in one run: selection time and the test loss
the target model reaches when fine-tuned on each selection.

Setup (not timed), once, in a temporary directory: the built-in benchmark at the largest size, its tokenizer, and
the selector and target base models, all from ``params.yaml`` (the models ``make run`` builds). Per pool size N
(the first N rows of that pool; the same target tasks): LESS's warmup on the N-row pool (not timed: both methods
use its checkpoints). Then, timed, the code the stages run, in the order below:

- ``distill_s``: Influence Distillation: JVP embeddings of the pool, landmark choice, the landmarks' exact
  features at one checkpoint, the target rows' gradients at that checkpoint, propagation and selection
  (``distill`` settings of ``params.yaml``; ``--landmarks`` overrides the count);
- ``less_s``: LESS: pool and target features at every warmup checkpoint, then matching and selection.

The target stores are deleted between the two, so each method pays for its own. Then the target model is
fine-tuned on each selection of each target task and evaluated on that task's test split (``finetune`` and
``evaluate`` settings): ``less_loss`` and ``distill_loss`` are mean test losses over the tasks. One line per size,
then the last line for the largest: ``pool_rows``, ``speedup`` (less_s / distill_s), ``loss_ratio``
(distill_loss / less_loss).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import apply_threads, machine, parser, result_line


def _setup(root: Path, params, pool_size: int):  # noqa: ANN001, ANN202
    from inflow import paths
    from inflow.pipeline import models, prepare

    params = dataclasses.replace(params, benchmark=dataclasses.replace(params.benchmark, pool_size=pool_size))
    os.chdir(root)
    prepare.prepare_benchmark(params.benchmark, paths.BENCHMARK, params.data)
    prepare.build_tokenizer(params.tokenizer, params.data, paths.TOKENIZER)
    for role in ("selector", "target"):
        cfg = getattr(params, role)
        texts = prepare.demo_texts(params.data, prepare.pretrains_on_pool(params.data)) if cfg.build else []
        models.build_base_model(cfg, paths.TOKENIZER, texts, paths.base_model_dir(role), params.data.max_seq_len)
    return params


def _size_dir(root: Path, n: int) -> Path:
    """A working directory for pool size ``n``: the shared models and benchmark linked in, the first n pool rows."""
    from inflow.data.pool import load_pool, write_pool_jsonl

    work = root / f"pool-{n}"
    (work / "data").mkdir(parents=True)
    os.symlink(root / "models", work / "models")
    os.symlink(root / "data" / "benchmark", work / "data" / "benchmark")
    write_pool_jsonl(load_pool(root / "data/benchmark/pool.jsonl").head(n), work / "data" / "pool.jsonl")
    return work


def _fine_tune_and_test(params, method: str) -> float:  # noqa: ANN001
    """Mean test loss over the target tasks of the target model fine-tuned on each task's selection."""
    from inflow import paths
    from inflow.pipeline.evaluate import run_evaluate
    from inflow.pipeline.train import run_finetune

    losses = []
    for selection in sorted(paths.selection_dir(method).glob("*.jsonl")):
        out = paths.finetuned_dir(method, selection.stem)
        run_finetune(params.finetune, params.data, paths.base_model_dir("target"), selection, out)
        metrics = run_evaluate(params.evaluate, params.data, paths.base_model_dir("target"), out)
        losses.append(metrics[selection.stem]["loss"])
    return sum(losses) / len(losses)


def run_size(root: Path, params, n: int, landmarks: int) -> dict:  # noqa: ANN001
    from inflow import paths
    from inflow.pipeline.distill import (
        LANDMARKS_FILE,
        landmark_checkpoint,
        landmark_stores,
        run_distill,
        write_landmarks,
    )
    from inflow.pipeline.distill_second import write_drift
    from inflow.pipeline.embed import plan_embed_jobs
    from inflow.pipeline.features import extract_store, plan_jobs
    from inflow.pipeline.select import run_less
    from inflow.pipeline.train import run_warmup

    os.chdir(_size_dir(root, n))
    params = dataclasses.replace(params, data=dataclasses.replace(params.data, pool="data/pool.jsonl"),
                                 distill=dataclasses.replace(params.distill, landmarks=landmarks))
    base = paths.base_model_dir("selector")
    run_warmup(params.warmup, params.data, base, paths.WARMUP)
    f, d = params.features, params.distill

    start = time.perf_counter()
    for job in plan_embed_jobs(d, f, params.sketch, params.data, "pool", base):
        extract_store(job, progress=False)
    write_landmarks(d, paths.embed_store_path("pool"), LANDMARKS_FILE)
    marks, second = landmark_stores(d, f, params.sketch, params.data, paths.WARMUP, base)
    for job in marks + second:
        extract_store(job, progress=False)
    for job in second:
        write_drift(job)
    checkpoint, _ = landmark_checkpoint(d, f, paths.WARMUP, base)
    one = dataclasses.replace(f, checkpoints=(checkpoint.name,))
    for job in plan_jobs(one, params.sketch, params.data, "targets", paths.WARMUP, base):
        extract_store(job, progress=False)
    run_distill(d, params.select, f, params.data, paths.WARMUP, base, "selector")
    distill_s = time.perf_counter() - start
    shutil.rmtree(paths.grads_split_dir("targets"))

    start = time.perf_counter()
    for split in ("pool", "targets"):
        for job in plan_jobs(f, params.sketch, params.data, split, paths.WARMUP, base):
            extract_store(job, progress=False)
    run_less(params.select, f, params.data, paths.WARMUP, base, "selector")
    less_s = time.perf_counter() - start

    less_loss, distill_loss = _fine_tune_and_test(params, "less"), _fine_tune_and_test(params, "distill")
    return {"pool_rows": n, "landmarks": min(landmarks, n), "order": d.order, "normalize": d.normalize,
            "less_s": less_s,
            "distill_s": distill_s, "speedup": less_s / distill_s, "less_loss": less_loss,
            "distill_loss": distill_loss, "loss_ratio": distill_loss / less_loss}


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--params", default="params.yaml", help="the params whose models and settings are used")
    cli.add_argument("--sizes", type=int, nargs=3, help="pool sizes (default 1500 3000 6000; --quick 300 600 1200)")
    cli.add_argument("--landmarks", type=int, default=0, help="landmarks (default: distill.landmarks of the params)")
    args = cli.parse_args(argv)
    apply_threads(args.threads)
    from inflow.config import load_params

    params = load_params(args.params)
    sizes = args.sizes or ([300, 600, 1200] if args.quick else [1500, 3000, 6000])
    if args.quick:  # smaller models and fewer epochs: the ratio's trend, in minutes
        params = dataclasses.replace(
            params, selector=dataclasses.replace(params.selector, pretrain_epochs=2),
            target=dataclasses.replace(params.target, pretrain_epochs=2),
            benchmark=dataclasses.replace(params.benchmark, corpus_size=500),
            finetune=dataclasses.replace(params.finetune, epochs=2))
    landmarks = args.landmarks or params.distill.landmarks
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="distill-vs-less-") as tmp:
        root = Path(tmp)
        try:
            params = _setup(root, params, max(sizes))
            rows = [run_size(root, params, n, landmarks) for n in sorted(sizes)]
        finally:
            os.chdir(here)
    for row in rows[:-1]:
        print(result_line(row))
    print(result_line({**rows[-1], "machine": machine()}))


if __name__ == "__main__":
    main()
