"""Plots of the summary: test loss per target task and method (grouped bars)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_summary(rows: Sequence[dict], path: str | Path) -> Path:
    """Grouped bar chart of test loss (left) and exact match (right) per target and method."""
    targets = sorted({r["target"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(1, len(methods))
    for ax, key, title in ((axes[0], "test_loss", "test loss (lower is better)"),
                           (axes[1], "exact_match", "exact match (higher is better)")):
        for j, method in enumerate(methods):
            values = [next((r[key] for r in rows if r["target"] == t and r["method"] == method), 0.0)
                      for t in targets]
            ax.bar([i + j * width for i in range(len(targets))], values, width, label=method)
        ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(targets))], targets)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
