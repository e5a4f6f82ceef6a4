"""Operations around the numerical core: driving DVC (repro, status, push/pull) and a local Prefect server.

Prefect-free and torch-free: the ``inflow`` command line (:mod:`inflow.cli`) and the ``pipeline`` flow
(``flows/pipeline.py``) both go through here, so a scheduled rerun does exactly what ``inflow run`` does.
"""

from inflow.ops.dvc import (
    DvcResult,
    add_remote,
    default_remote,
    find_project,
    ran_stages,
    run_dvc,
    stage_names,
    stage_status,
)
from inflow.ops.server import free_port, prefect_server, wait_healthy

__all__ = [
    "DvcResult",
    "add_remote",
    "default_remote",
    "find_project",
    "free_port",
    "prefect_server",
    "ran_stages",
    "run_dvc",
    "stage_names",
    "stage_status",
    "wait_healthy",
]
