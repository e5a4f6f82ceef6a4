"""The flows' command line: a stage run records its wall time under the DVC stage's name; a user error exits 1; a
stage run by hand first unprotects its DVC-linked outputs, as ``dvc repro`` does."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

import flows.common
from flows.common import cli, dvc_stage, stage_name, stage_outputs, unprotect_outputs, write_timing
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


DVC_YAML = """\
stages:
  dummy:
    cmd: python -m flows.dummy
    outs:
      - out/dummy
      - out/single.json:
          cache: false
    metrics:
      - timings/dummy.json:
          cache: false
  grow:
    foreach: [pool, targets]
    do:
      cmd: python -m flows.grow --split ${item}
      outs:
        - out/grow/${item}:
            persist: true
        - ${data.somewhere}/x
"""


def linked_project(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """A project with dvc.yaml whose outputs' files are hardlinks or symlinks into a fake DVC cache: {name: (workspace
    file, cache object)}."""
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5"
    cache.mkdir(parents=True)
    files = {"dummy_hard": "out/dummy/a.parquet", "dummy_sym": "out/dummy/sub/b.json", "single": "out/single.json",
             "pool": "out/grow/pool/chunk", "targets": "out/grow/targets/chunk"}
    linked: dict[str, tuple[Path, Path]] = {}
    for i, (key, relative) in enumerate(files.items()):
        obj, name = cache / f"{i:02d}", tmp_path / relative
        obj.write_text(f"cached {key}\n")
        obj.chmod(0o444)
        name.parent.mkdir(parents=True, exist_ok=True)
        if key.endswith("sym") or key == "targets":
            name.symlink_to(obj)
        else:
            os.link(obj, name)
        linked[key] = (name, obj)
    return linked


def assert_private(name: Path, obj: Path, key: str) -> None:
    assert not name.is_symlink() and name.stat().st_nlink == 1 and name.stat().st_ino != obj.stat().st_ino
    assert name.read_text() == f"cached {key}\n"
    name.write_text("rewritten in place\n")  # as a writer rewriting an existing output does
    assert obj.read_text() == f"cached {key}\n"


def assert_linked(name: Path, obj: Path) -> None:
    assert name.is_symlink() or name.stat().st_ino == obj.stat().st_ino


def test_dvc_stage_reads_plain_and_foreach_stages(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    dvc_yaml = tmp_path / "dvc.yaml"
    assert list(stage_outputs(dvc_stage("dummy", dvc_yaml))) == ["out/dummy", "out/single.json", "timings/dummy.json"]
    grow = dvc_stage("grow@targets", dvc_yaml)
    assert grow["cmd"] == "python -m flows.grow --split targets"
    assert list(stage_outputs(grow)) == ["out/grow/targets"]  # a params interpolation left unresolved is skipped
    for absent in ("grow", "grow@other", "dummy@pool", "nope"):
        assert dvc_stage(absent, dvc_yaml) == {}
    assert dvc_stage("dummy", tmp_path / "missing.yaml") == {}


def test_unprotect_outputs_breaks_the_links_of_one_stage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    linked = linked_project(tmp_path)
    with caplog.at_level(logging.INFO, logger="flows.common"):
        assert unprotect_outputs("dummy", tmp_path / "dvc.yaml") == 3
    assert "stage dummy: unprotected 3 DVC-linked output files" in caplog.text
    for key in ("dummy_hard", "dummy_sym", "single"):
        assert_private(*linked[key], key)
    for key in ("pool", "targets"):  # another stage's outputs are not touched
        assert_linked(*linked[key])
    assert unprotect_outputs("dummy", tmp_path / "dvc.yaml") == 0  # nothing linked any more


def test_unprotect_outputs_of_a_foreach_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    linked = linked_project(tmp_path)
    monkeypatch.chdir(tmp_path)  # the default dvc.yaml is the working directory's
    assert unprotect_outputs("grow@targets") == 1
    assert_private(*linked["targets"], "targets")
    assert_linked(*linked["pool"])
    assert unprotect_outputs("grow@pool") == 1
    assert_private(*linked["pool"], "pool")


def test_unprotect_outputs_without_dvc_yaml_or_stage_is_a_no_op(tmp_path: Path) -> None:
    assert unprotect_outputs("dummy", tmp_path / "dvc.yaml") == 0
    linked = linked_project(tmp_path)
    assert unprotect_outputs("no_such_stage", tmp_path / "dvc.yaml") == 0
    assert unprotect_outputs("grow@other", tmp_path / "dvc.yaml") == 0
    for name, obj in linked.values():
        assert_linked(name, obj)


def test_cli_unprotects_the_stage_outputs_before_running_the_flow(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    linked = linked_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    name, obj = linked["pool"]
    seen: list[bool] = []

    class _Writer(_Flow):
        def __call__(self, **kwargs: object) -> None:
            super().__call__(**kwargs)
            seen.append(name.stat().st_nlink == 1)
            name.write_text("rewritten in place\n")

    flow = _Writer("grow")
    calls: list[str] = []
    monkeypatch.setattr(flows.common, "unprotect_outputs",
                        lambda stage: calls.append(stage) or unprotect_outputs(stage))
    monkeypatch.setattr(sys, "argv", ["prog", "--split", "pool"])
    cli(flow, split={"required": True})
    assert calls == ["grow@pool"] and seen == [True]
    assert flow.calls == [{"params_path": "params.yaml", "split": "pool"}]
    assert obj.read_text() == "cached pool\n" and name.read_text() == "rewritten in place\n"
    assert_linked(*linked["targets"])
