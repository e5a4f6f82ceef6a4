"""Real servers started inside a test on 127.0.0.1 at a free port: an S3-compatible object store (moto's server
mode) for DVC remotes. The Prefect server is :func:`inflow.ops.prefect_server` itself."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inflow.ops import free_port

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
"""moto accepts any credentials; DVC's S3 client still wants some in its environment."""


@contextmanager
def moto_s3(bucket: str, log_path: Path, timeout: float = 60.0) -> Iterator[str]:
    """An S3-compatible server holding an empty ``bucket``; yields its endpoint URL, stops it on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"moto exited: {log_path.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto did not answer within {timeout} s"
                time.sleep(0.3)
        _client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def s3_object_count(endpoint: str, bucket: str) -> int:
    """How many objects ``bucket`` holds (what a push stored)."""
    pages = _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def _client(endpoint: str):
    """A boto3 S3 client of the moto server at ``endpoint``."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])
