"""Report figures: each writes a PNG that decodes and is not blank; the picks and errors behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inflow.report import figures

TARGETS = ("arithmetic", "qa")


def agg_row(model: str, budget: float, target: str, method: str, loss: float, seconds: float | None = 10.0) -> dict:
    """One aggregated row as :func:`inflow.report.document.aggregate` writes it."""
    row = {"model": model, "budget": budget, "target": target, "method": method, "n_seeds": 2,
           "test_loss_mean": loss, "test_loss_std": 0.1, "in_family_share_mean": 0.6,
           "in_family_harmful_share_mean": 0.05, "other_share_mean": 0.3, "decoy_share_mean": 0.1}
    if seconds is not None:
        row["selection_seconds_mean"] = seconds
    return row


AGG = [agg_row("qwen2", budget, target, method, loss + (budget == 0.1) * -0.1, seconds)
       for target in TARGETS
       for method, loss, seconds in (("less", 1.0, 100.0), ("bm25", 1.2, 2.0), ("random", 1.5, None))
       for budget in (0.05, 0.1)] + [
    agg_row("qwen2", 0.5, target, method, loss) for target in TARGETS
    for method, loss in (("in2core", 1.05), ("random_in2core", 1.3))] + [
    agg_row("qwen2", 1.0, target, "full", 1.02) for target in TARGETS]
TRANSFER = [{"target": target, "method": method, "budget": 0.05, "selector_model": "qwen2", "target_model": "llama",
             "selector_improvement": 0.5, "target_improvement": improvement, "transfer_gap": None}
            for target in TARGETS for method, improvement in (("less", 0.4), ("bm25", None))]


def assert_picture(path: Path) -> None:
    """The file decodes as an image with more than a handful of colours (not blank)."""
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize("draw", [
    lambda path: figures.plot_loss_vs_budget(AGG, path, "qwen2"),
    lambda path: figures.plot_composition(AGG, path, "qwen2", 0.05),
    lambda path: figures.plot_score_histograms(
        {m: {t: np.random.default_rng(0).normal(size=50) for t in TARGETS} for m in ("less", "bm25")}, path),
    lambda path: figures.plot_compute_vs_quality(AGG, path, "qwen2", 0.05),
    lambda path: figures.plot_transfer(TRANSFER, path),
], ids=["loss_vs_budget", "composition", "score_histograms", "compute_vs_quality", "transfer"])
def test_each_figure_is_a_nonblank_png(draw, tmp_path: Path) -> None:
    path = draw(tmp_path / "sub" / "figure.png")
    assert path == tmp_path / "sub" / "figure.png"
    assert_picture(path)


def test_at_budget_takes_the_budget_or_a_method_own_one() -> None:
    picked = {(r["target"], r["method"]): r["budget"] for r in figures.at_budget(AGG, 0.05)}
    assert picked[("qa", "less")] == 0.05 and picked[("qa", "in2core")] == 0.5 and picked[("qa", "full")] == 1.0
    assert len(picked) == len(TARGETS) * 6
    assert {r["budget"] for r in figures.at_budget(AGG, 0.1) if r["method"] == "less"} == {0.1}


def test_method_colours_are_distinct_and_stable() -> None:
    colours = [figures.method_colour(m) for m in figures.METHOD_ORDER]
    assert len(set(colours)) == len(colours)
    assert figures.method_colour("new_method") == figures.method_colour("new_method")


def test_figures_refuse_missing_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no aggregated rows with test_loss for model 'llama'"):
        figures.plot_loss_vs_budget(AGG, tmp_path / "x.png", "llama")
    with pytest.raises(ValueError, match="no method has a known selection time"):
        figures.plot_compute_vs_quality([agg_row("qwen2", 0.05, "qa", "less", 1.0, None)], tmp_path / "x.png",
                                        "qwen2", 0.05)
    with pytest.raises(ValueError, match="no transfer rows"):
        figures.plot_transfer([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        figures.plot_score_histograms({"less": {"qa": np.zeros((2, 3))}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
