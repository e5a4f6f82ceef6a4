"""The whole DAG with `dvc repro` on tiny params in a fresh temporary repository, then LESS-T reuse:
changing only the target model must rerun no selection stage."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inflow.config import params_to_dict, tiny_params

ROOT = Path(__file__).resolve().parents[2]
SELECTION_STAGES = {"prepare", "tokenizer", "base@selector", "warmup", "features@pool", "features@targets",
                    "less", "baselines"}


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PREFECT_HOME": str(repo / ".prefect")}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_then_target_change_reuses_selections(tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("src", "flows", "tasks", "dvc.yaml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    params = params_to_dict(tiny_params())
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")

    first = _ran(_dvc(repo, "repro"))
    assert SELECTION_STAGES <= first
    summary = json.loads((repo / "reports/summary.json").read_text())
    assert {r["method"] for r in summary["rows"]} == {"less", "random", "full"}
    assert len(summary["rows"]) == 3 * 3  # 3 target tasks x 3 methods

    params["target"]["hidden_size"] = 48  # a different target model
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    second = _ran(_dvc(repo, "repro"))
    assert "base@target" in second and "finetune@less" in second and "report" in second
    assert not (second & SELECTION_STAGES), f"selection stages reran: {second & SELECTION_STAGES}"
