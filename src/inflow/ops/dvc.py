"""DVC, driven from Python: the project root, ``dvc repro`` with the stages it ran, status, remotes, push/pull.

Every command runs ``<this interpreter> -m dvc`` in the project root with this interpreter's ``bin/`` first on
``PATH``, so the stages' own ``python -m flows.<stage>`` commands run in the same environment whether ``inflow``
was called as ``.venv/bin/inflow`` or from an activated shell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from inflow.errors import InflowError

_RAN = re.compile(r"Running stage '([^']+)'")
_RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run, checking out outputs")
QUIET_ENV = {"TQDM_DISABLE": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
"""What ``--quiet`` adds to a run's environment: no progress bars (tqdm reads TQDM_DISABLE), Prefect warnings only."""


@dataclass(frozen=True)
class DvcResult:
    """One ``dvc`` command: its exit status, its combined output and the stages it ran or restored."""

    args: tuple[str, ...]
    returncode: int
    output: str
    ran: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> DvcResult:
        """Self, or :class:`InflowError` with the output's tail when the command failed."""
        if not self.ok:
            tail = "\n".join(self.output.strip().splitlines()[-30:])
            raise InflowError(f"`dvc {' '.join(self.args)}` failed (exit {self.returncode}):\n{tail}")
        return self


def find_project(start: str | os.PathLike[str] = ".") -> Path:
    """The nearest directory at or above ``start`` holding a ``dvc.yaml`` and a ``.dvc/`` (an inflow project)."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() and (candidate / ".dvc").is_dir():
            return candidate
    raise InflowError(f"{here}: not inside an inflow project (no dvc.yaml with a .dvc/ next to it at or above it); "
                      "cd into your clone of the project, or pass --project PATH")


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this interpreter's ``bin/`` first on PATH, plus ``extra``."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir, "DVC_NO_ANALYTICS": "1"}
    return {**env, **(extra or {})}


def run_dvc(project: Path, *args: str, echo: bool = False, env: dict[str, str] | None = None) -> DvcResult:
    """Run ``dvc args`` in ``project``; stream its output to stdout as it comes when ``echo``."""
    command = [sys.executable, "-m", "dvc", *args]
    process = subprocess.Popen(command, cwd=project, env=dvc_env(env), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
    returncode = process.wait()
    output = "".join(lines)
    return DvcResult(tuple(args), returncode, output, ran_stages(output), _unique(_RESTORED.findall(output)))


def ran_stages(output: str) -> list[str]:
    """The stages a ``dvc repro`` output says it ran (not those skipped or restored from the run cache), in order."""
    return _unique(_RAN.findall(output))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def stage_names(project: Path) -> list[str]:
    """Every stage of the project's dvc.yaml, foreach items expanded (``features@pool``), in file order."""
    result = run_dvc(project, "stage", "list", "--name-only").check()
    return [line.strip() for line in result.output.splitlines() if line.strip() and " " not in line.strip()]


def stage_status(project: Path, targets: list[str] | None = None) -> dict[str, list]:
    """``dvc status --json``: {stage: [what changed]} for the stages that are not up to date."""
    result = run_dvc(project, "status", "--json", *(targets or [])).check()
    text = result.output.strip()
    start = text.find("{")
    if start < 0:
        raise InflowError(f"`dvc status --json` printed no JSON:\n{text[-2000:]}")
    return json.loads(text[start:text.rfind("}") + 1])


def default_remote(project: Path) -> str | None:
    """The name of the project's default DVC remote, or None when none is set."""
    result = run_dvc(project, "remote", "default")
    name = result.output.strip().splitlines()[-1].strip() if result.ok and result.output.strip() else ""
    return name or None


def add_remote(project: Path, name: str, url: str, *, endpoint_url: str | None = None, default: bool = True,
               local: bool = False) -> None:
    """Add (or replace) the DVC remote ``name`` at ``url``; ``endpoint_url`` for an S3-compatible server (MinIO,
    moto, Ceph). ``local`` writes it to .dvc/config.local (not committed) instead of .dvc/config."""
    scope = ["--local"] if local else []
    run_dvc(project, "remote", "add", *scope, "--force", *(["-d"] if default else []), name, url).check()
    if endpoint_url:
        run_dvc(project, "remote", "modify", *scope, name, "endpointurl", endpoint_url).check()
