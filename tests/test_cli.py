"""The ``inflow`` command line: help everywhere, errors that say what to do with exit status 1, status from a
real DVC repository, remotes, the pipeline run's Markdown artifact."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inflow.cli import app
from inflow.ops import run_dvc

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["status"], ["select"], ["report"], ["serve"], ["share"],
                                     ["share", "push"], ["share", "pull"], ["share", "remote"]])
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC repository with this project's dvc.yaml and params.yaml (nothing run)."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(tmp_path, "init", "-q").check()
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    return tmp_path


def test_outside_a_project_the_error_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--project", str(tmp_path)])
    assert result.exit_code == 1 and "not inside an inflow project" in result.output


def test_unknown_method_is_refused_before_anything_runs(project: Path) -> None:
    result = runner.invoke(app, ["select", "--method", "bm26", "--project", str(project)])
    assert result.exit_code == 1 and "pick one of less, distill" in result.output


def test_status_lists_every_stage_and_exits_1_when_any_would_rerun(project: Path) -> None:
    result = runner.invoke(app, ["status", "--project", str(project)])
    assert result.exit_code == 1
    lines = dict(line.split(None, 1) for line in result.output.strip().splitlines())
    assert {"prepare", "features@pool", "less", "evaluate@full", "report"} <= set(lines)
    assert set(lines.values()) == {"never run"}  # no dvc.lock yet
    (project / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prepare:\n    cmd: python -m flows.prepare\n")
    lines = dict(line.split(None, 1) for line in runner.invoke(app, ["status", "-p", str(project)]).output.strip()
                 .splitlines())
    assert lines["prepare"].startswith("rerun:") and "params.yaml" in lines["prepare"]
    assert lines["tokenizer"] == "never run"


def test_share_without_a_remote_says_how_to_add_one_then_remote_is_configured(project: Path) -> None:
    result = runner.invoke(app, ["share", "push", "--project", str(project)])
    assert result.exit_code == 1 and "inflow share remote NAME URL" in result.output
    result = runner.invoke(app, ["share", "remote", "team", str(project / "remote"), "--project", str(project)])
    assert result.exit_code == 0
    assert "remote = team" in (project / ".dvc" / "config").read_text()
    result = runner.invoke(app, ["status", "--cloud", "--project", str(project)])
    assert "remote:" in result.output


def test_pipeline_run_artifact_names_the_stages_and_the_report() -> None:
    from flows.pipeline import render_run

    text = render_run({"ran": ["prepare", "less"], "restored": ["warmup"]}, "team",
                      {"rows": [{"target": "qa", "method": "less", "test_loss": 2.5}]})
    assert "stages ran (2): prepare, less" in text and "restored from the run cache: warmup" in text
    assert "pushed to DVC remote: team" in text and "2.5000" in text
    assert "none (everything up to date)" in render_run({"ran": [], "restored": []}, None, None)
