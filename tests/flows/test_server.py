"""``python -m flows.server -- <command>``: one real local Prefect server for a whole command; flows run inside
the command report to it, and the command's exit status comes back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
from prefect import flow
from prefect.client.orchestration import get_client

@flow(name="ping")
def ping() -> int:
    return 1

ping()
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs()
print("API", os.environ["PREFECT_API_URL"], "RUNS", len(runs), [r.name for r in runs][:1])
sys.exit(3)
"""


@pytest.mark.slow
def test_command_reports_to_the_server_and_keeps_its_exit_status(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    result = subprocess.run([sys.executable, "-m", "flows.server", "--log", str(tmp_path / "server.log"), "--",
                             sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 3, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("API "))
    assert line.split()[1].startswith("http://127.0.0.1:") and line.split()[3] == "1"  # the ping run, on it
    assert (tmp_path / "server.log").stat().st_size > 0


def test_no_command_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "flows.server"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "give the command to run" in result.stderr
