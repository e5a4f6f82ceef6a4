"""In2Core's ``coverage`` step: for every test row of every target task, how much helpful influence the pool
offers it (:mod:`inflow.methods.in2core.coverage`), next to the test loss of the target model fine-tuned on that
task's In2Core coreset, so a user sees which test points the data does not cover.

Support is measured for each test row's unit gradient: raw influence scales with the test row's gradient norm, so
raw support would mix how large that gradient is with how well the pool points the way the row needs. Writes
``reports/coverage/``: ``coverage.parquet`` (one row per test row: task, example_id, subtask, total, top, count,
grad_norm, test_loss), ``coverage.json`` (per task: the Spearman correlation of support and of the gradient norm
with the test loss, the least covered rows) and two plots (``coverage_hist.png``, ``coverage_vs_loss.png``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import torch

from inflow.config import DataConfig, EvaluateConfig, In2CoreConfig
from inflow.data.targets import load_targets
from inflow.errors import InflowError
from inflow.methods.in2core import Blocks, Coverage, fit_datainf
from inflow.paths import REPORTS
from inflow.pipeline.evaluate import example_test_losses
from inflow.pipeline.in2core import open_stores, raw_chunks

COVERAGE = REPORTS / "coverage"
LEAST_COVERED = 5  # rows listed per task in coverage.json


def coverage_table(cfg: In2CoreConfig, data: DataConfig) -> pl.DataFrame:
    """One row per test row of every task: its support from the pool (total, top ``coverage_top``, count of
    proponents), from DataInf influence on the stored (kept) layer blocks of the row's *unit* gradient, and that
    gradient's norm (``grad_norm``); one fit for all tasks' rows."""
    _checkpoint, pool, tests = open_stores(cfg, data, "test")
    blocks = Blocks.from_sketch(pool.attrs.sketch)  # the stores hold the kept layers (in2core.layers) only
    rows = {name: torch.from_numpy(s.read_all(raw=True).astype(np.float64)) for name, s in tests.items()}
    targets = torch.cat(list(rows.values()))  # [M, d]: every task's test rows
    norms = targets.norm(dim=1)
    # unit test gradients: support per unit of the test row's gradient (module docstring)
    targets = targets / norms.clamp_min(1e-30)[:, None]
    chunks = raw_chunks(pool)
    fit = fit_datainf(chunks, targets, blocks, cfg.damping)
    spans, start = {}, 0
    for name, r in rows.items():
        spans[name], start = slice(start, start + len(r)), start + len(r)
    cover = {name: Coverage(len(r), cfg.coverage_top) for name, r in rows.items()}
    for g in chunks():
        influence = fit.influence(g)  # [c, M]
        for name, span in spans.items():
            cover[name].update(influence[:, span])
    subtasks = {t.name: dict(zip(t.test["example_id"].to_list(), t.test["subtask"].to_list()))
                for t in load_targets(data)}
    frames = []
    for name, store in tests.items():
        found = cover[name].result()
        ids = store.example_ids()
        frames.append(pl.DataFrame({
            "task": [name] * len(ids), "example_id": ids, "subtask": [subtasks[name].get(i, "") for i in ids],
            "total": found["total"].numpy(), "top": found["top"].numpy(), "count": found["count"].numpy(),
            "grad_norm": norms[spans[name]].numpy()}))
    return pl.concat(frames)


def run_coverage(cfg: In2CoreConfig, evaluate: EvaluateConfig, data: DataConfig, target_model: str | Path,
                 finetuned: str | Path, out_dir: str | Path = COVERAGE) -> dict:
    """The coverage table with each test row's loss under the target model fine-tuned on its task's coreset
    (adapters ``finetuned/<task>``), its summary and plots under ``out_dir``; returns the summary."""
    from inflow.report.coverage import plot_coverage_hist, plot_coverage_vs_loss

    out_dir = Path(out_dir)
    table = coverage_table(cfg, data)
    losses: dict[tuple[str, str], float] = {}
    for task in load_targets(data):
        adapter = Path(finetuned) / task.name
        if not adapter.is_dir():
            raise InflowError(f"{adapter}: no fine-tuned model for {task.name}; run the finetune stage of the "
                              "in2core selection first (dvc repro finetune@in2core)")
        for example_id, loss in example_test_losses(evaluate, data, target_model, adapter, task).items():
            losses[(task.name, example_id)] = loss
    table = table.with_columns(pl.Series("test_loss", [losses.get(k, math.nan) for k in
                                                       zip(table["task"], table["example_id"])], dtype=pl.Float64))
    out_dir.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out_dir / "coverage.parquet")
    summary = {"coverage_top": cfg.coverage_top, "layers": cfg.layers if isinstance(cfg.layers, str)
               else list(cfg.layers), "tasks": {name: _task_summary(part) for (name,), part in
                                                 table.group_by("task", maintain_order=True)}}
    (out_dir / "coverage.json").write_text(json.dumps(summary, indent=2))
    plot_coverage_hist(table, out_dir / "coverage_hist.png", cfg.coverage_top)
    plot_coverage_vs_loss(table, out_dir / "coverage_vs_loss.png", cfg.coverage_top,
                          {name: task["spearman_top_vs_loss"] for name, task in summary["tasks"].items()})
    return summary


def _task_summary(part: pl.DataFrame) -> dict:
    """Per task: test rows, mean support, the Spearman correlation of (top, total) support with the test loss
    (negative: better-covered rows are predicted better), and the least covered rows."""
    from scipy.stats import spearmanr  # scipy is imported slowly: only here

    def rho(column: str) -> float | None:
        if part.height < 3 or part[column].n_unique() < 2 or part["test_loss"].n_unique() < 2:
            return None
        return round(float(spearmanr(part[column], part["test_loss"]).statistic), 4)

    least = part.sort("top").head(LEAST_COVERED)
    return {"test_rows": part.height, "mean_top": float(part["top"].mean()), "mean_total": float(part["total"].mean()),
            "uncovered": int((part["count"] == 0).sum()), "spearman_top_vs_loss": rho("top"),
            "spearman_total_vs_loss": rho("total"), "spearman_grad_norm_vs_loss": rho("grad_norm"),
            "least_covered": least.select("example_id", "subtask", "top", "test_loss").to_dicts()}
