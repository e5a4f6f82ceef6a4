"""A fresh DVC repository holding this project's code and a params.yaml, and `dvc` run in it (integration tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from inflow.ops import ran_stages, run_dvc

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
    """Run ``dvc args`` in ``repo`` (:func:`inflow.ops.run_dvc`: this interpreter's environment); its output, or a
    failed assertion with it."""
    result = run_dvc(repo, *args, env={"PREFECT_HOME": str(repo / ".prefect")})
    assert result.ok, f"dvc {' '.join(args)} failed:\n{result.output[-8000:]}"
    return result.output


def ran(output: str) -> set[str]:
    """The stages a ``dvc repro`` output says it ran."""
    return set(ran_stages(output))
