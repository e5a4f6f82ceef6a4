"""Run a command with every stage reporting to one local Prefect server: ``python -m flows.server -- dvc repro``.

Starts ``prefect server start`` on 127.0.0.1 at a free port (:func:`inflow.ops.prefect_server`), runs the command
with ``PREFECT_API_URL`` pointing at it (so ``dvc repro``'s stages, and their subprocesses, report to it), then
stops it. With ``PREFECT_API_URL`` already set (a long-lived server), the command runs against that one unchanged.
Exits with the command's exit status. ``inflow run`` does the same for the pipeline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from inflow.errors import InflowError
from inflow.ops import prefect_server


def run_with_server(command: list[str], log_path: Path) -> int:
    """Run ``command`` with ``PREFECT_API_URL`` set to a server started for it (or the configured one)."""
    with prefect_server(log_path) as api_url:
        if not os.environ.get("PREFECT_API_URL"):
            print(f"Prefect server at {api_url.removesuffix('/api')} (log: {log_path}); every stage reports to it",
                  flush=True)
        return subprocess.run(command, env={**os.environ, "PREFECT_API_URL": api_url}).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.server", description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=".prefect/server.log", help="where the server's output goes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. python -m flows.server -- dvc repro")
    try:
        return run_with_server(command, Path(args.log))
    except InflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
