"""Contracts between params.yaml, the config objects, dvc.yaml, flows/ and the core package."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inflow.config import Params, load_params, params_to_dict

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _stage_entries() -> list[tuple[str, dict, list[str]]]:
    """(stage name, stage body, items) for every stage, foreach stages expanded to their items."""
    out = []
    for name, body in DVC["stages"].items():
        if "foreach" in body:
            out.append((name, body["do"], list(body["foreach"])))
        else:
            out.append((name, body, [""]))
    return out


def _lookup(data: dict, dotted: str) -> object:
    node: object = data
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} not found"
        node = node[part]
    return node


def test_params_yaml_loads_and_lists_every_key() -> None:
    params = load_params(ROOT / "params.yaml")
    written = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
        return out

    # every knob is visible in params.yaml (no hidden defaults), and nothing else is there
    assert keys(written) == keys(params_to_dict(Params()))
    assert isinstance(params, Params)


def test_every_stage_records_its_wall_time_as_a_metric() -> None:
    # flows.common.cli writes timings/<stage>.json after every stage run; dvc.yaml must declare it (uncached, so
    # DVC's run cache restores it with the outputs it belongs to)
    for name, body, items in _stage_entries():
        declared = {next(iter(m)) if isinstance(m, dict) else m: m for m in body.get("metrics", [])}
        expected = f"timings/{name}@${{item}}.json" if items != [""] else f"timings/{name}.json"
        assert expected in declared, f"stage {name}: metrics must list {expected}"
        assert declared[expected][expected] == {"cache": False}, f"stage {name}: {expected} needs cache: false"


def test_dvc_params_keys_exist() -> None:
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    checked = 0
    for name, body, items in _stage_entries():
        for item in items:
            for key in body.get("params", []):
                _lookup(written, key.replace("${item}", item))
                checked += 1
    assert checked >= 20


def test_every_stage_runs_a_flow_of_the_same_name() -> None:
    stages = _stage_entries()
    assert len(stages) == len(DVC["stages"]) >= 9
    for name, body, _items in stages:
        match = re.fullmatch(r"python -m flows\.(\w+)(?: .*)?", body["cmd"])
        assert match, f"stage {name}: cmd must be `python -m flows.<stage> ...`"
        assert match.group(1) == name, f"stage {name} runs flows.{match.group(1)}"
        module = importlib.import_module(f"flows.{name}")
        flow = getattr(module, name)
        assert flow.name == name
    flow_files = {p.stem for p in (ROOT / "flows").glob("*.py")} - {"__init__", "common"}
    assert {name for name, _, _ in stages} <= flow_files


def _interpolate(text: str, item: str) -> str:
    """``${item}`` and ``${section.key}`` of params.yaml, as DVC substitutes them."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())

    def lookup(match: re.Match) -> str:
        if match.group(1) == "item":
            return item
        value = written
        for part in match.group(1).split("."):
            value = value[part]
        return str(value)

    return re.sub(r"\$\{([^}]+)\}", lookup, text)


def test_stage_deps_exist() -> None:
    produced = set()
    for _name, body, items in _stage_entries():
        for item in items:
            for out in body.get("outs", []) + [next(iter(m)) for m in body.get("metrics", [])]:
                produced.add(_interpolate(out if isinstance(out, str) else next(iter(out)), item))
    for name, body, items in _stage_entries():
        for item in items:
            for dep in body.get("deps", []):
                dep = _interpolate(dep, item)
                assert (ROOT / dep).exists() or any(dep == p or dep.startswith(p + "/") or p.startswith(dep + "/")
                                                    for p in produced), f"stage {name}: dep {dep} is missing"


def test_core_never_imports_prefect() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "src" / "inflow").rglob("*.py")
    )
    assert len(modules) >= 30  # the glob really found the package
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
    code += "assert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py")))
def test_core_files_stay_small(path: str) -> None:
    assert len((ROOT / path).read_text().splitlines()) <= 450, f"{path}: split it (one concept per module)"


def test_user_data_reaches_stages_through_params() -> None:
    """No stage but prepare names a demo data path: they depend on ``${data.pool}``, ``${data.targets}``,
    ``${data.corpus}`` and ``${features.warmup_dir}``, so pointing those at your own files reruns what reads them."""
    readers = {"data.pool": {"tokenizer", "warmup", "features", "less", "baselines", "report"},
               "data.targets": {"features", "less", "evaluate"}, "features.warmup_dir": {"features", "less"},
               "data.corpus": {"tokenizer", "base"}}
    for name, body, _items in _stage_entries():
        deps = [d for d in body.get("deps", []) if not d.startswith("src/")]
        if name != "prepare":
            assert not [d for d in deps if d.startswith("data/benchmark")], f"stage {name} names demo data: {deps}"
        for key, stages in readers.items():
            if name in stages:
                assert "${" + key + "}" in deps, f"stage {name} reads {key} but does not depend on it"
                assert key in body.get("params", []), f"stage {name} reads {key} but lacks the param"
