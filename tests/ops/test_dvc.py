"""inflow.ops.dvc against a real DVC repository (dvc init in tmp_path): project discovery, the stages a repro
ran, status, remotes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from inflow.errors import InflowError
from inflow.ops import add_remote, default_remote, find_project, ran_stages, run_dvc, stage_names, stage_status
from inflow.ops.dvc import DvcResult

DVC_YAML = """stages:
  make:
    foreach: [one, two]
    do:
      cmd: python -c "open('${item}.txt', 'w').write(open('src.txt').read())"
      deps:
        - src.txt
      outs:
        - ${item}.txt
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(tmp_path, "init", "-q").check()
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "src.txt").write_text("a")
    return tmp_path


def test_find_project_walks_up_and_says_what_to_do(repo: Path, tmp_path_factory) -> None:
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert find_project(repo / "sub" / "deeper") == repo
    with pytest.raises(InflowError, match="--project"):
        find_project(tmp_path_factory.mktemp("elsewhere"))


def test_repro_reports_the_stages_it_ran_then_none(repo: Path) -> None:
    assert stage_names(repo) == ["make@one", "make@two"]
    assert set(stage_status(repo)) == {"make@one", "make@two"}
    first = run_dvc(repo, "repro").check()
    assert first.ran == ["make@one", "make@two"] and (repo / "two.txt").read_text() == "a"
    assert stage_status(repo) == {}
    assert run_dvc(repo, "repro").check().ran == []
    (repo / "src.txt").write_text("b")
    assert set(stage_status(repo)) == {"make@one", "make@two"}


def test_a_failed_command_raises_with_its_output(repo: Path) -> None:
    result = run_dvc(repo, "repro", "no-such-stage")
    assert not result.ok
    with pytest.raises(InflowError, match="no-such-stage"):
        result.check()


def test_ran_stages_keeps_order_and_ignores_skipped_and_restored() -> None:
    output = ("Running stage 'prepare':\n> python -m flows.prepare\nStage 'tokenizer' didn't change, skipping\n"
              "Stage 'warmup' is cached - skipping run, checking out outputs\nRunning stage 'features@pool':\n"
              "Running stage 'prepare':\n")
    assert ran_stages(output) == ["prepare", "features@pool"]
    assert DvcResult(("repro",), 0, output, ["x"]).check().ok


def test_remotes_default_and_endpoint(repo: Path, tmp_path_factory) -> None:
    assert default_remote(repo) is None
    add_remote(repo, "team", "s3://bucket/path", endpoint_url="http://127.0.0.1:9000")
    add_remote(repo, "backup", str(tmp_path_factory.mktemp("remote")), default=False)
    assert default_remote(repo) == "team"
    config = (repo / ".dvc" / "config").read_text()
    assert "endpointurl = http://127.0.0.1:9000" in config and "backup" in config
