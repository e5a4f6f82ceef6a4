"""A fresh DVC repository holding this project's code and a params.yaml, and `dvc` run in it (integration tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def make_repo(path: Path, params: dict) -> Path:
    """``path`` as a git + DVC repository with src/, flows/, tasks/, dvc.yaml, .gitignore and ``params`` as
    params.yaml."""
    path.mkdir(parents=True)
    for name in ("src", "flows", "tasks", "dvc.yaml", ".gitignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / name)
    write_params(path, params)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    dvc(path, "init", "-q")
    for key, value in project_cache_config().items():  # the project's link types, as a teammate's clone has them
        dvc(path, "config", f"cache.{key}", value)
    return path


def project_cache_config() -> dict[str, str]:
    """The ``[cache]`` settings of this project's ``.dvc/config`` (e.g. ``{"type": "reflink,hardlink,symlink"}``),
    read with configobj as DVC reads them, each value as ``dvc config`` takes it."""
    from configobj import ConfigObj  # DVC's own config parser (a DVC dependency)

    section = ConfigObj(str(ROOT / ".dvc" / "config")).get("cache", {})
    return {key: ",".join(value) if isinstance(value, list) else str(value) for key, value in section.items()}


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def dvc(repo: Path, *args: str) -> str:
    """Run ``dvc args`` in ``repo`` (this interpreter's environment); its output, or a failed assertion with it."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PREFECT_HOME": str(repo / ".prefect")}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    """The stages a ``dvc repro`` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))
