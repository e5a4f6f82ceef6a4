"""The summary: rows per target x method, composition on benchmark pools, and a note when it is left out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest

from inflow.data.pool import MESSAGES_DTYPE
from inflow.report.summary import COMPOSITION, build_summary, format_table, main, summarize
from inflow.selection.outputs import write_selection

MESSAGES = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def _pool(ground_truth: bool) -> pl.DataFrame:
    pool = pl.DataFrame({"example_id": ["a", "b", "c", "d"], "dataset": [""] * 4,
                         "messages": pl.Series([MESSAGES] * 4, dtype=MESSAGES_DTYPE)})
    if ground_truth:
        pool = pool.with_columns(family=pl.Series(["gsm", "gsm", "qa", "sort"]),
                                 kind=pl.Series(["target", "target", "target", "decoy"]),
                                 harmful=pl.Series([False, True, False, False]))
    return pool


def _project(root: Path, pool: pl.DataFrame) -> tuple[Path, Path]:
    """metrics/less.json (one model per task) and selections/less (2 rows for gsm, 2 for qa)."""
    metrics, selections = root / "metrics", root / "selections"
    metrics.mkdir()
    (metrics / "less.json").write_text(json.dumps({
        "gsm": {"gsm": {"loss": 1.5, "exact_match": 0.25}}, "qa": {"qa": {"loss": 2.0, "exact_match": 0.5}}}))
    tables = {t: pl.DataFrame({"example_id": ids, "score": [1.0, 0.5], "rank": [0, 1]})
              for t, ids in (("gsm", ["a", "b"]), ("qa", ["c", "d"]))}
    write_selection(tables, pool, selections / "less", "less", "selector")
    return metrics, selections


def test_benchmark_pool_gets_composition_and_no_note(tmp_path: Path) -> None:
    pool = _pool(ground_truth=True)
    summary = summarize(["less"], *_project(tmp_path, pool), pool)
    assert summary["notes"] == [] and summary["methods"] == ["less"]
    gsm, qa = summary["rows"]
    assert (gsm["target"], gsm["test_loss"], gsm["selection_size"]) == ("gsm", 1.5, 2)
    assert gsm["in_family_share"] == 1.0 and gsm["harmful_share"] == 0.5 and qa["decoy_share"] == 0.5
    assert gsm["in_family_harmful_share"] == 0.5 and gsm["other_share"] == 0.0 and gsm["family_harmful_rate"] == 0.5
    assert qa["in_family_share"] == 0.5 and qa["other_share"] == 0.0 and qa["family_harmful_rate"] == 0.0
    assert gsm["pool_size"] == 4


def test_pool_without_ground_truth_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    pool = _pool(ground_truth=False)
    with caplog.at_level(logging.INFO, logger="inflow.report.summary"):
        summary = summarize(["less"], *_project(tmp_path, pool), pool)
    assert len(summary["notes"]) == 1
    note = summary["notes"][0]
    assert "no selection composition (in_family_share, in_family_harmful_share, other_share, decoy_share" in note
    assert "no ground-truth column(s) family, kind, harmful" in note
    assert note in caplog.text
    assert all(not set(COMPOSITION) & set(row) for row in summary["rows"])
    assert "in_family_share" not in format_table(summary["rows"])
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    assert main([str(path)]) == 0
    assert f"note: {note}" in capsys.readouterr().out


def test_partly_labelled_pool_names_the_missing_columns(tmp_path: Path) -> None:
    pool = _pool(ground_truth=True).drop("harmful")
    rows = build_summary(["less"], *_project(tmp_path, pool), pool)
    assert all("in_family_share" not in row for row in rows)
    assert "column(s) harmful," in summarize(["less"], tmp_path / "metrics", tmp_path / "selections", pool)["notes"][0]
