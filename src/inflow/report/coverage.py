"""Plots of In2Core's coverage table (``pipeline/coverage.py``): how much help each test row gets from the pool."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_coverage_hist(table: pl.DataFrame, path: str | Path, top: int) -> Path:
    """One histogram per task of the test rows' top-``top`` proponent support (log scale when it spans decades)."""
    tasks = table["task"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        values = table.filter(pl.col("task") == task)["top"].to_numpy()
        positive = values[values > 0]
        if len(positive) and positive.max() / positive.min() > 100:
            bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 20)
            ax.set_xscale("log")
            ax.hist(positive, bins=bins, color="tab:blue")
        else:
            ax.hist(values, bins=20, color="tab:blue")
        uncovered = int((values <= 0).sum())
        ax.set_title(f"{task}" + (f" ({uncovered} uncovered)" if uncovered else ""))
        ax.set_xlabel(f"support of the best {top} proponents")
    axes[0][0].set_ylabel("test rows")
    return _save(fig, path)


def plot_coverage_vs_loss(table: pl.DataFrame, path: str | Path, top: int,
                          rho: dict[str, float | None] | None = None) -> Path:
    """Per task, each test row's support against its test loss after fine-tuning on the coreset, coloured by
    subtask; ``rho`` (task: Spearman correlation) goes in the titles."""
    tasks = table["task"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = table.filter(pl.col("task") == task)
        for (subtask,), rows in part.group_by("subtask", maintain_order=True):
            ax.scatter(rows["top"].to_numpy(), rows["test_loss"].to_numpy(), s=12, alpha=0.7, label=subtask or "-")
        x = part["top"].to_numpy()
        if len(x) and (x > 0).all() and x.max() / x.min() > 100:
            ax.set_xscale("log")
        value = (rho or {}).get(task)
        ax.set_title(task + (f" (Spearman {value:+.2f})" if value is not None else ""))
        ax.legend(fontsize=7, loc="best")
        ax.set_xlabel(f"support of the best {top} proponents")
    axes[0][0].set_ylabel("test loss (fine-tuned on the coreset)")
    return _save(fig, path)
