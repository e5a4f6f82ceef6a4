"""Thin Prefect tasks over :mod:`inflow.ops`: the steps of a pipeline run (``flows/pipeline.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from inflow.ops import default_remote, run_dvc
from inflow.ops.dvc import QUIET_ENV


@task(name="dvc-repro", cache_policy=NO_CACHE)
def dvc_repro(project: Path, targets: list[str], quiet: bool) -> dict:
    """``dvc repro [targets]``: only stages whose inputs changed run; the rest are skipped or restored."""
    result = run_dvc(project, "repro", *targets, echo=not quiet, env=QUIET_ENV if quiet else None).check()
    get_run_logger().info("dvc repro ran %d stage(s): %s", len(result.ran), ", ".join(result.ran) or "none")
    return {"ran": result.ran, "restored": result.restored}


@task(name="dvc-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=15)
def dvc_push(project: Path, remote: str | None) -> str | None:
    """``dvc push`` to ``remote`` (the project's default remote when None); None when no remote is configured."""
    name = remote or default_remote(project)
    if name is None:
        get_run_logger().warning("no DVC remote configured (inflow share remote --help): nothing pushed")
        return None
    run_dvc(project, "push", "-r", name).check()
    get_run_logger().info("pushed every cached output to the DVC remote %r", name)
    return name


@task(name="read-summary", cache_policy=NO_CACHE)
def read_summary(project: Path) -> dict | None:
    """The report stage's ``reports/summary.json``, or None when the run did not reach it."""
    path = project / "reports" / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
