"""The comparison command on tiny params: one seed, two budgets, LESS's other subtask rule and the LESS-T transfer
check, each selection fine-tuned and evaluated, the report written; then the same command again computes nothing
(every run's `dvc repro` executes no stage: skipped or restored from DVC's run cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inflow.config import params_to_dict, tiny_params

ROOT = Path(__file__).resolve().parents[2]


def _compare(tmp_path: Path) -> dict:
    cmd = [sys.executable, "-m", "flows.server", "--", sys.executable, "-m", "flows.compare",
           "--params", str(tmp_path / "params.yaml"), "--seeds", "0", "--budgets", "0.05", "0.1",
           "--variants", "default", "max", "transfer",
           "--workdir", str(tmp_path / "ws"), "--out", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"compare failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return json.loads((tmp_path / "out" / "runs.json").read_text())


@pytest.mark.slow
@pytest.mark.integration
def test_compare_covers_every_axis_then_reuses_every_stage(tmp_path: Path) -> None:
    params = params_to_dict(tiny_params())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    first = _compare(tmp_path)
    assert [(r["budget"], r["variant"]) for r in first["runs"]] == [
        (0.05, "default"), (0.05, "max"), (0.05, "transfer"), (0.1, "default"), (0.1, "max")]
    ran = [set(r["ran"]) for r in first["runs"]]
    assert {"warmup", "features@pool", "less", "in2core", "bm25", "rds", "report"} <= ran[0]
    assert {"less", "bm25", "rds", "finetune@less", "finetune@rds"} <= ran[1] and "distill" not in ran[1]
    assert {"base@target", "finetune@less", "evaluate@random"} <= ran[2] and "finetune@in2core" not in ran[2]
    assert "warmup" not in ran[3] and not {"features@pool", "in2core"} & ran[3]  # stores reused across budgets
    assert {"less", "distill", "baselines", "finetune@less"} <= ran[3]

    rows = first["rows"]
    keys = {(r["model"], r["budget"], r["method"]) for r in rows if r["target"] == "arithmetic"}
    targeted = {"less", "distill", "bm25", "rds", "random"}
    assert {("qwen2", b, m) for b in (0.05, 0.1) for m in targeted | {"less_max", "bm25_max", "rds_max"}} <= keys
    assert {("llama", 0.05, m) for m in targeted} <= keys
    assert {("qwen2", 0.5, "in2core"), ("qwen2", 1.0, "full")} <= keys
    assert len(rows) == len({(r["model"], r["budget"], r["method"], r["target"]) for r in rows})  # no duplicates
    less = next(r for r in rows if r["method"] == "less" and r["budget"] == 0.05 and r["model"] == "qwen2")
    assert less["selection_seconds"] > 0 and less["finetune_seconds"] > 0 and less["selection_size"] == 12

    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert all(m in report for m in ("less_max", "bm25", "rds", "in2core", "distill"))
    assert (out / "report.html").stat().st_size > 10_000

    second = _compare(tmp_path)
    assert [r["ran"] for r in second["runs"]] == [[]] * 5, "the second comparison recomputed stages"
    assert second["rows"] == rows
