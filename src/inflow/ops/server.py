"""A local Prefect server for the length of a command: every stage flow of a run reports to it.

Without a configured server each stage's flow would start a temporary server of its own (10-15 s per stage on a
2-core machine, minutes over a whole pipeline run). :func:`prefect_server` starts one ``prefect server start`` on
127.0.0.1, waits until it answers and yields its API URL; with ``PREFECT_API_URL`` already set (a long-lived
server) it starts nothing and yields that URL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inflow.errors import InflowError

START_TIMEOUT_S = 300  # a busy 2-core machine takes tens of seconds to bring the server up


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(api_url: str, server: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``<api_url>/health`` until it answers 200; :class:`InflowError` if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise InflowError(f"the Prefect server exited with status {server.returncode} before it answered; "
                              "run `prefect server start` by hand to see why")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise InflowError(f"the Prefect server at {api_url} did not answer within {timeout:.0f} s")


@contextmanager
def prefect_server(log_path: str | os.PathLike[str], port: int | None = None) -> Iterator[str]:
    """Yield the API URL of a running Prefect server: the configured one (``PREFECT_API_URL``) or a local one
    started here on ``port`` (a free one when None) and stopped on exit. Its output goes to ``log_path``."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    port = port or free_port()
    if port_in_use(port):
        raise InflowError(f"port {port} is taken (another Prefect server?): export PREFECT_API_URL="
                          f"http://127.0.0.1:{port}/api to use it, or pick another port")
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(api_url, server)
        yield api_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
