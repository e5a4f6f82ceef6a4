"""In2Core's reduced layers against all layers, in one run: extraction and influence time, and rank agreement.

Setup (not timed), once, in a temporary directory: the built-in benchmark, its tokenizer and the selector base
model from ``params.yaml`` (what ``make run`` builds), the first N pool rows, and LESS's warmup on them (In2Core
with ``in2core.model: warmup``, so every setting reads the same checkpoint). Then, for ``in2core.layers`` = all
and each reduction (default ``first:1`` and ``last:1``; ``--layers`` to choose), timed, the code the stages
run: ``extract_s`` (plain gradients of the pool and of every target task's validation rows, only the kept
layers' LoRA weights differentiated) and ``influence_s`` (DataInf influence and the coreset). Each reduction's
line: ``time_saved`` = 1 − its (extract_s + influence_s) / all layers', ``spearman`` and ``topk_overlap`` (of the
``in2core.fraction`` coreset) against all layers, the minimum over the target tasks, and ``dims`` (the store's
width, so its share of the disk). The last line is the last reduction's.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import apply_threads, machine, parser, result_line


def _run(params, layers: str) -> tuple[float, float, dict]:  # noqa: ANN001
    """(extract_s, influence_s, manifest) of In2Core with ``in2core.layers = layers``; scores in the manifest."""
    import polars as pl

    from inflow import paths
    from inflow.pipeline.features import extract_store
    from inflow.pipeline.in2core import in2core_jobs, run_in2core
    from inflow.pipeline.stores import open_store

    cfg = dataclasses.replace(params.in2core, model="warmup", layers=layers, compare=())
    start = time.perf_counter()
    jobs = [j for j in in2core_jobs(cfg, params.features, params.sketch, params.data,
                                    paths.base_model_dir("selector")) if j.target_rows == "val"]  # no test rows
    for job in jobs:
        open_store(job, rebuild=True)
        extract_store(job, progress=False)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    manifest = run_in2core(cfg, params.data, "selector")
    influence_s = time.perf_counter() - start
    manifest["scores"] = pl.read_parquet(paths.selection_dir("in2core") / "scores.parquet")
    return extract_s, influence_s, manifest


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--params", default="params.yaml", help="the params whose models and settings are used")
    cli.add_argument("--rows", type=int, help="pool rows (default 3000; --quick 300)")
    cli.add_argument("--layers", nargs="+", default=["first:1", "last:1"], help="the reductions to time")
    args = cli.parse_args(argv)
    apply_threads(args.threads)
    from distill_vs_less import _setup, _size_dir
    from scipy.stats import spearmanr

    from inflow import paths
    from inflow.config import load_params
    from inflow.pipeline.train import run_warmup

    params = load_params(args.params)
    rows = args.rows or (300 if args.quick else 3000)
    if args.quick:
        params = dataclasses.replace(
            params, selector=dataclasses.replace(params.selector, pretrain_epochs=2),
            target=dataclasses.replace(params.target, pretrain_epochs=2),
            benchmark=dataclasses.replace(params.benchmark, corpus_size=500))
    here = Path.cwd()
    lines = []
    with tempfile.TemporaryDirectory(prefix="in2core-layers-") as tmp:
        try:
            params = _setup(Path(tmp), params, rows)
            os.chdir(_size_dir(Path(tmp), rows))
            params = dataclasses.replace(params, data=dataclasses.replace(params.data, pool="data/pool.jsonl"))
            run_warmup(params.warmup, params.data, paths.base_model_dir("selector"), paths.WARMUP)
            full_extract, full_influence, full = _run(params, "all")
            full_s = full_extract + full_influence
            for layers in args.layers:
                extract_s, influence_s, reduced = _run(params, layers)
                k = full["k"]
                rho, overlap = [], []
                for task in full["targets"]:
                    a = full["scores"][f"influence_{task}"].to_numpy()
                    b = reduced["scores"][f"influence_{task}"].to_numpy()
                    rho.append(float(spearmanr(a, b).statistic))
                    overlap.append(len(set(np.argsort(a)[:k]) & set(np.argsort(b)[:k])) / k)
                lines.append({"pool_rows": rows, "layers": layers, "all_extract_s": full_extract,
                              "all_influence_s": full_influence, "extract_s": extract_s, "influence_s": influence_s,
                              "time_saved": 1 - (extract_s + influence_s) / full_s, "spearman": min(rho),
                              "topk_overlap": min(overlap), "dims": reduced["dims"], "all_dims": full["dims"]})
        finally:
            os.chdir(here)
    for line in lines[:-1]:
        print(result_line(line))
    print(result_line({**lines[-1], "machine": machine()}))


if __name__ == "__main__":
    main()
