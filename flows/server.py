"""Run a command (``dvc repro``) with every stage reporting to one local Prefect server.

Without a configured server each stage's flow starts a temporary one of its own (10-15 s per stage on a 2-core
machine, minutes over a whole pipeline run). ``python -m flows.server -- dvc repro`` starts one
``prefect server start`` on 127.0.0.1 at a free port, waits until it answers, runs the command with
``PREFECT_API_URL`` pointing at it (so ``dvc repro``'s stages, and their subprocesses, report to it), then stops
it. With ``PREFECT_API_URL`` already set (a long-lived server), the command runs against that one unchanged.
Exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 300  # a busy 2-core machine takes tens of seconds to bring the server up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api_url: str, server: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``<api_url>/health`` until it answers 200; ``RuntimeError`` if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {server.returncode} before it answered; "
                               "run `prefect server start` by hand to see why")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server at {api_url} did not answer within {timeout:.0f} s")


def run_with_server(command: list[str], log_path: Path) -> int:
    """Run ``command`` with ``PREFECT_API_URL`` set to a server started for it (or the configured one)."""
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.run(command).returncode
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(api_url, server)
        print(f"Prefect server at http://127.0.0.1:{port} (log: {log_path}); every stage reports to it",
              flush=True)
        return subprocess.run(command, env={**os.environ, "PREFECT_API_URL": api_url}).returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


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
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
