"""Each stage flow run's Markdown summary artifact: the pure renderer, the decorator every stage flow carries, a
failure that only warns, and one real flow run whose artifact and parameters are read back from the server."""

from __future__ import annotations

import importlib
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from flows import artifacts, common
from flows.artifacts import (
    artifact_key,
    dvc_stage_params,
    figures_written,
    flatten,
    format_seconds,
    format_value,
    publish_stage_summary,
    render_stage_markdown,
)
from inflow.config import params_to_dict, tiny_params

ROOT = Path(__file__).resolve().parents[2]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize(("stage", "key"), [
    ("prepare", "stage-prepare"),
    ("features@targets", "stage-features-targets"),
    ("in2core_grads", "stage-in2core-grads"),
    ("finetune@random_in2core", "stage-finetune-random-in2core"),
    ("Evaluate@LESS", "stage-evaluate-less"),
    ("@@", "stage-unnamed"),
])
def test_artifact_keys_are_prefect_safe(stage: str, key: str) -> None:
    assert artifact_key(stage) == key
    assert all(c.islower() or c.isdigit() or c == "-" for c in key)


def test_values_are_compact_one_line_and_escaped() -> None:
    assert format_value(0.123456789) == "0.123457" and format_value(3) == "3" and format_value(True) == "true"
    assert format_value(None) == "null" and format_value(float("nan")) == "nan"
    assert format_value(["a", "b"]) == "[a, b]" and format_value(list(range(100))) == "100 items"
    assert format_value([{"a": 1}]) == "1 item"
    assert format_value({"x": 1, "y": 2.5}) == "{x: 1, y: 2.5}" and format_value({"x": [1]}) == "1 key"
    assert format_value("x" * 200) == "x" * 79 + "…"
    assert format_value("a|b\nc") == "a\\|b c"


def test_flatten_expands_two_levels_and_indexes_a_top_level_list() -> None:
    nested = {"k": 1, "a": {"b": {"c": {"d": 1}}}, "empty": {}}
    assert flatten(nested) == {"k": 1, "a.b.c": {"d": 1}, "empty": {}}
    assert flatten(nested, depth=0) == {"k": 1, "a": {"b": {"c": {"d": 1}}}, "empty": {}}
    assert flatten([{"store": "s0", "rows": 2}, "x"]) == {"0.store": "s0", "0.rows": 2, "1": "x"}
    assert flatten("models/a") == {"value": "models/a"}


def test_render_stage_markdown() -> None:
    manifest = {"k": 12, "loss": 2.345678901, "selected": list(range(50)), "checkpoints": ["c1", "c2"],
                "tasks": {"qa": {"rows": 8, "spearman": -0.25, "least_covered": [{"id": "r1"}, {"id": "r2"}]}},
                "path": "data/selections/less", "note": "n" * 300}
    text = render_stage_markdown("features@pool", manifest, 83.4, ["reports/b.png", Path("reports/a.html")],
                                 {"params_path": "params.yaml", "split": "pool"}, {"sketch": {"dim": 64}})
    lines = text.splitlines()
    assert lines[0] == "# Stage `features@pool`" and "**Wall time:** 1 min 23 s" in lines
    for row in ("| params_path | params.yaml |", "| split | pool |", "| sketch.dim | 64 |", "| k | 12 |",
                "| loss | 2.34568 |", "| selected | 50 items |", "| checkpoints | [c1, c2] |",
                "| tasks.qa.rows | 8 |", "| tasks.qa.spearman | -0.25 |", "| tasks.qa.least_covered | 2 items |",
                "| path | data/selections/less |", f"| note | {'n' * 79}… |"):
        assert row in lines, row
    figures = lines[lines.index("## Figures and reports") + 2:]
    assert figures == ["- `reports/a.html`", "- `reports/b.png`"]


def test_render_without_figures_manifest_or_stage_params() -> None:
    text = render_stage_markdown("finetune@less", ["models/finetuned/less/qa"], 2.0, [], {"params_path": "p.yaml"})
    assert "| 0 | models/finetuned/less/qa |" in text and "(none written)" in text
    assert "dvc.yaml" not in text and "**Wall time:** 2.0 s" in text
    assert "(empty)" in render_stage_markdown("x", {}, 0.0, [], {})


def test_long_tables_are_cut() -> None:
    text = render_stage_markdown("x", {f"k{i}": i for i in range(artifacts.MAX_ROWS + 5)}, 0.0, [], {})
    assert f"| k{artifacts.MAX_ROWS - 1} |" in text and f"| k{artifacts.MAX_ROWS} |" not in text
    assert "| … | 5 more |" in text


def test_format_seconds() -> None:
    assert format_seconds(0.04) == "0.0 s" and format_seconds(59.94) == "59.9 s"
    assert format_seconds(245) == "4 min 05 s" and format_seconds(3723) == "1 h 02 min 03 s"


def test_figures_written_since_the_stage_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/coverage").mkdir(parents=True)
    old = tmp_path / "reports/old.png"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    since = time.time()
    for name in ("reports/coverage/hist.png", "reports/summary.json", "reports/page.html"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "plot.svg").write_bytes(b"")
    found = figures_written(since, {"plot": "plot.svg", "missing": "gone.png"})
    assert found == ["plot.svg", "reports/coverage/hist.png", "reports/page.html"]
    assert figures_written(since, roots=("nowhere",)) == []


def test_dvc_stage_params_follow_dvc_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_to_dict(tiny_params())))
    assert dvc_stage_params("prepare", "params.yaml") == {}  # no dvc.yaml here
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    tiny = params_to_dict(tiny_params())
    base = dvc_stage_params("base@target", "params.yaml")
    assert base["target"] == tiny["target"] and base["data.max_seq_len"] == tiny["data"]["max_seq_len"]
    assert dvc_stage_params("tokenizer", "params.yaml") == {
        "tokenizer": tiny["tokenizer"], "data.pool": tiny["data"]["pool"], "data.corpus": tiny["data"]["corpus"]}
    assert dvc_stage_params("no_such_stage", "params.yaml") == {}


def test_publishing_failure_only_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.artifacts

    def broken(**_: object) -> None:
        raise RuntimeError("no API")

    warnings: list[str] = []

    class Log:  # Prefect's logging setup may detach pytest's caplog handler: record the warnings here
        def warning(self, message: str, *args: object) -> None:
            warnings.append(message % args)

    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", broken)
    monkeypatch.setattr(artifacts, "_logger", Log)
    monkeypatch.chdir(ROOT)  # dvc.yaml lists the stage's params, but the params file is missing
    publish_stage_summary("less", {"k": 1}, 1.0, {"params_path": "missing.yaml"}, time.time())
    assert warnings[0].startswith("stage summary of less: no dvc.yaml params (missing.yaml")
    assert warnings[1] == "could not publish the summary artifact of stage less: no API"


def test_summarised_publishes_and_returns_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(common, "publish_stage_summary", lambda *args: calls.append(args))

    def base(params_path: str = "params.yaml", role: str = "selector") -> dict:
        """Doc."""
        return {"built": True}

    wrapped = common.summarised(base)
    assert wrapped.__name__ == "base" and wrapped.__doc__ == "Doc." and wrapped.__wrapped__ is base
    assert wrapped("p.yaml", role="target") == {"built": True}
    stage, manifest, seconds, parameters, since = calls[0]
    assert (stage, manifest, parameters) == ("base@target", {"built": True}, {"params_path": "p.yaml",
                                                                              "role": "target"})
    assert seconds >= 0 and since <= time.time()
    assert common.summarised(lambda params_path="params.yaml": 1)() == 1 and calls[1][0] == "<lambda>"


def test_every_stage_flow_publishes_its_summary() -> None:
    for name in STAGES:
        flow = getattr(importlib.import_module(f"flows.{name}"), name)
        assert getattr(flow.fn, "__wrapped__", None) is not None, f"flows/{name}.py: add @summarised under @flow"
        assert flow.fn.__code__ is common.summarised(lambda: None).__code__, name


@pytest.mark.slow
def test_prepare_flow_run_has_its_artifact_and_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          prefect_api: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.prepare import prepare

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_to_dict(tiny_params())))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    state = prepare(params_path="params.yaml", return_state=True)
    manifest = state.result()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).parameters == {"params_path": "params.yaml"}
        by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        found = client.read_artifacts(artifact_filter=by_run)
    assert [(a.key, a.type) for a in found] == [("stage-prepare", "markdown")]
    text = found[0].data
    assert text.startswith("# Stage `prepare`") and "| params_path | params.yaml |" in text
    assert f"| pool.rows | {manifest['pool']['rows']} |" in text
    assert f"| benchmark.seed | {tiny_params().benchmark.seed} |" in text  # the params dvc.yaml lists for prepare
