"""Figures of the comparison report (:mod:`inflow.report.document`), one PNG each, from the aggregated rows.

- :func:`plot_loss_vs_budget`: test loss against budget, a line per method, a panel per target.
- :func:`plot_composition`: what each selection is made of (in-family correct / harmful, other skills, decoys).
- :func:`plot_score_histograms`: each method's score distribution over the pool, methods × targets.
- :func:`plot_compute_vs_quality`: selection wall time against test loss.
- :func:`plot_transfer`: improvement over random when the selection fine-tunes the selector's family vs another.
- :func:`draw_figures`: every figure the rows allow, as the report's {caption: path}.

A method keeps its colour in every figure (:func:`method_colour`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

# pairs share a hue in tab20 (dark, light): a method and its _max variant, in2core and its random baseline
METHOD_ORDER = ("less", "less_max", "bm25", "bm25_max", "rds", "rds_max", "distill", "in2core", "random",
                "random_in2core", "full")
PARTS = (("in-family correct", "tab:green"), ("in-family harmful", "tab:red"), ("other skills", "tab:gray"),
         ("decoys", "tab:orange"))


def method_colour(method: str) -> tuple[float, float, float]:
    """The method's colour: its place in :data:`METHOD_ORDER` in tab20 (unknown methods after the known ones)."""
    colours = plt.get_cmap("tab20").colors
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method)) % 9
    return colours[index % len(colours)]


def _ordered(methods: set[str]) -> list[str]:
    return sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))


def percent(budget: float) -> str:
    """A budget (share of the pool) as a percentage: 0.05 → ``5%``, 0.025 → ``2.5%``."""
    return f"{budget * 100:g}%"


def _panels(n: int, width: float, height: float, **kwargs: object) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, **kwargs)
    return fig, axes[0]


def _save(fig: plt.Figure, path: str | Path, legend_axes: Sequence[plt.Axes] = ()) -> Path:
    """Write the figure; the legend of ``legend_axes`` (one entry per label) goes to the right of the panels."""
    entries: dict[str, object] = {}
    for ax in legend_axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the legend outside the panels in the image
    plt.close(fig)
    return path


def _rows(agg: Sequence[Mapping], model: str, metric: str) -> list[Mapping]:
    rows = [r for r in agg if r["model"] == model and f"{metric}_mean" in r]
    if not rows:
        raise ValueError(f"no aggregated rows with {metric} for model {model!r} (models: "
                         f"{sorted({r['model'] for r in agg})}): pass a model that has them")
    return rows


def at_budget(rows: Sequence[Mapping], budget: float) -> list[Mapping]:
    """Per (target, method) the row at ``budget``, or for a method never run at it (in2core, full) its nearest
    budget on a log scale."""
    best: dict[tuple[str, str], Mapping] = {}
    for r in rows:
        key, distance = (r["target"], r["method"]), abs(np.log(r["budget"] / budget))
        if key not in best or distance < abs(np.log(best[key]["budget"] / budget)):
            best[key] = r
    return [best[key] for key in sorted(best)]


def _label(row: Mapping, budget: float) -> str:
    return row["method"] if row["budget"] == budget else f"{row['method']} ({percent(row['budget'])})"


def plot_loss_vs_budget(agg: Sequence[Mapping], path: str | Path, model: str) -> Path:
    """Test loss (mean ± std over seeds) against budget (log scale), a line per method, a panel per target."""
    rows = _rows(agg, model, "test_loss")
    targets = sorted({r["target"] for r in rows})
    budgets = sorted({r["budget"] for r in rows})
    fig, axes = _panels(len(targets), 4.2, 3.6)
    for ax, target in zip(axes, targets):
        for method in _ordered({r["method"] for r in rows if r["target"] == target}):
            points = sorted((r["budget"], r["test_loss_mean"], r["test_loss_std"]) for r in rows
                            if r["target"] == target and r["method"] == method)
            x, y, err = zip(*points)
            ax.errorbar(x, y, yerr=err, fmt="o-" if len(points) > 1 else "o", color=method_colour(method),
                        label=method, capsize=3, markersize=5)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [percent(b) for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(title=target, xlabel="budget (share of the pool, log scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test loss (mean ± std over seeds)")
    fig.suptitle(f"Test loss against budget, fine-tuning {model} (lower is better)")
    return _save(fig, path, axes)


def plot_composition(agg: Sequence[Mapping], path: str | Path, model: str, budget: float) -> Path:
    """Stacked bars per method of the selection's make-up at ``budget``, a panel per target."""
    rows = at_budget(_rows(agg, model, "in_family_share"), budget)
    targets = sorted({r["target"] for r in rows})
    fig, axes = _panels(len(targets), 4.0, max(2.5, 0.8 + 0.35 * max(sum(r["target"] == t for r in rows)
                                                                     for t in targets)))
    for ax, target in zip(axes, targets):
        order = _ordered({r["method"] for r in rows})
        part = sorted((r for r in rows if r["target"] == target), key=lambda r: -order.index(r["method"]))  # top-down
        harmful = np.array([r.get("in_family_harmful_share_mean", 0.0) for r in part])
        shares = (np.array([r["in_family_share_mean"] for r in part]) - harmful, harmful,
                  np.array([r.get("other_share_mean", 0.0) for r in part]),
                  np.array([r.get("decoy_share_mean", 0.0) for r in part]))
        left = np.zeros(len(part))
        for values, (label, colour) in zip(shares, PARTS):
            ax.barh(range(len(part)), values, left=left, color=colour, label=label)
            left += values
        ax.set_yticks(range(len(part)), [_label(r, budget) for r in part])
        ax.set(title=target, xlabel="share of the selected rows", xlim=(0, max(1.0, float(left.max()))))
    fig.suptitle(f"Composition of the selections at {percent(budget)}, {model}")
    return _save(fig, path, axes[:1])


def plot_score_histograms(scores: Mapping[str, Mapping[str, np.ndarray]], path: str | Path) -> Path:
    """A grid (methods × targets) of histograms of each method's scores over the pool (``[n_pool]`` each)."""
    methods = _ordered(set(scores))
    targets = sorted({t for per_target in scores.values() for t in per_target})
    if not methods or not targets:
        raise ValueError("no scores to plot: pass {method: {target: [n_pool] scores}}")
    fig, axes = plt.subplots(len(methods), len(targets), figsize=(3.4 * len(targets), 2.4 * len(methods)),
                             squeeze=False)
    for i, method in enumerate(methods):
        for j, target in enumerate(targets):
            ax = axes[i][j]
            ax.set_title(f"{method} · {target}", fontsize=9)
            if target not in scores[method]:
                ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
                continue
            values = np.asarray(scores[method][target], dtype=np.float64)
            if values.ndim != 1:
                raise ValueError(f"scores of {method} on {target} have shape {values.shape}: pass one score per "
                                 "pool row ([n_pool])")
            ax.hist(values[np.isfinite(values)], bins=40, color=method_colour(method))
            ax.set_xlabel("score" if i == len(methods) - 1 else "")
            ax.set_ylabel("pool rows" if j == 0 else "")
    fig.suptitle("Score distributions over the pool")
    return _save(fig, path)


def plot_compute_vs_quality(agg: Sequence[Mapping], path: str | Path, model: str, budget: float) -> Path:
    """Selection wall time (log scale) against test loss at ``budget``, a labelled point per method and target."""
    rows = [r for r in at_budget(_rows(agg, model, "test_loss"), budget) if r.get("selection_seconds_mean", 0) > 0]
    if not rows:
        raise ValueError(f"no method has a known selection time for {model} at {percent(budget)}: record "
                         "selection_seconds in the result rows")
    targets = sorted({r["target"] for r in rows})
    fig, axes = _panels(len(targets), 4.2, 3.6)
    for ax, target in zip(axes, targets):
        order = _ordered({r["method"] for r in rows})
        for r in sorted((r for r in rows if r["target"] == target), key=lambda r: order.index(r["method"])):
            ax.scatter(r["selection_seconds_mean"], r["test_loss_mean"], color=method_colour(r["method"]),
                       label=r["method"], s=30)
            ax.annotate(_label(r, budget), (r["selection_seconds_mean"], r["test_loss_mean"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        seconds = [r["selection_seconds_mean"] for r in rows]
        if max(seconds) / min(seconds) > 10:  # log only where times span decades: ticks stay readable
            ax.set_xscale("log")
        ax.set(title=target, xlabel="selection wall time (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test loss (mean over seeds)")
    fig.suptitle(f"Selection cost against quality at {percent(budget)}, {model}")
    return _save(fig, path, axes)


def plot_transfer(transfer: Sequence[Mapping], path: str | Path) -> Path:
    """Grouped bars per method: improvement over random when fine-tuning the selector's family vs the other model."""
    if not transfer:
        raise ValueError("no transfer rows: the methods need results under both the selector's and another model")
    targets = sorted({t["target"] for t in transfer})
    selector, other = transfer[0]["selector_model"], transfer[0]["target_model"]
    fig, axes = _panels(len(targets), 1.0 + 0.6 * max(sum(t["target"] == g for t in transfer) for g in targets), 3.6)
    for ax, target in zip(axes, targets):
        part = [t for t in transfer if t["target"] == target]
        x = np.arange(len(part))
        for offset, role, name, colour in ((-0.2, "selector", selector, "tab:blue"),
                                           (0.2, "target", other, "tab:orange")):
            values = [np.nan if t[f"{role}_improvement"] is None else t[f"{role}_improvement"] for t in part]
            ax.bar(x + offset, values, 0.4, color=colour, label=f"fine-tuning {name}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [f"{t['method']}\n{percent(t['budget'])}" for t in part], fontsize=8)
        ax.set_title(target)
    axes[0].set_ylabel("improvement over random\n(random − method test loss)")
    fig.suptitle(f"Transfer of selections made with {selector}")
    return _save(fig, path, axes)


def draw_figures(agg: Sequence[Mapping], transfer: Sequence[Mapping], scores: Mapping | None, out_dir: Path,
                 model: str, budget: float) -> dict[str, Path]:
    """Every figure the rows allow, written under ``out_dir``, as {caption: path}: composition only with the
    benchmark's composition columns, histograms only with ``scores``, compute only with known selection times,
    transfer only with an improvement measured under both models."""
    rows = [r for r in agg if r["model"] == model]
    drawn = {f"Test loss against budget ({model})": plot_loss_vs_budget(agg, out_dir / "loss_vs_budget.png", model)}
    if any("in_family_share_mean" in r for r in rows):
        drawn[f"Composition of the selections at {percent(budget)} ({model})"] = plot_composition(
            agg, out_dir / "composition.png", model, budget)
    if scores:
        drawn["Score distributions over the pool"] = plot_score_histograms(scores, out_dir / "score_histograms.png")
    if any(r.get("selection_seconds_mean", 0) > 0 for r in rows):
        drawn[f"Selection time against test loss at {percent(budget)} ({model})"] = plot_compute_vs_quality(
            agg, out_dir / "compute_vs_quality.png", model, budget)
    if any(t["selector_improvement"] is not None or t["target_improvement"] is not None for t in transfer):
        drawn["Improvement over random under each fine-tuned model"] = plot_transfer(transfer,
                                                                                     out_dir / "transfer.png")
    return drawn
