"""The flows' command line: a stage run records its wall time under the DVC stage's name; a user error exits 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from flows.common import cli, stage_name, write_timing
from inflow.errors import InflowError


class _Flow:
    """Stands in for a Prefect flow object: cli only reads name, description and calls it."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.description, self.fail, self.calls = name, "test flow", fail, []

    def __call__(self, **kwargs: object) -> None:
        self.calls.append(kwargs)
        if self.fail:
            raise InflowError("bad input: fix it")


def test_stage_names_follow_dvc() -> None:
    assert stage_name("less") == "less" and stage_name("features", "pool") == "features@pool"


def test_cli_records_the_stage_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flow = _Flow("finetune")
    monkeypatch.setattr(sys, "argv", ["prog", "--method", "less"])
    cli(flow, method={"required": True})
    assert flow.calls == [{"params_path": "params.yaml", "method": "less"}]
    record = json.loads((tmp_path / "timings" / "finetune@less.json").read_text())
    assert record["stage"] == "finetune@less" and record["seconds"] >= 0


def test_cli_user_error_exits_1_and_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prog"])
    with pytest.raises(SystemExit) as exit_info:
        cli(_Flow("less", fail=True))
    assert exit_info.value.code == 1 and "error: bad input: fix it" in capsys.readouterr().err
    assert not (tmp_path / "timings").exists()


def test_write_timing_rounds_and_overwrites(tmp_path: Path) -> None:
    write_timing("less", 1.23456, tmp_path)
    path = write_timing("less", 2.0, tmp_path)
    assert json.loads(path.read_text()) == {"stage": "less", "seconds": 2.0}
