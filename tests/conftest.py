"""Shared fixtures. Tests build tiny models locally; nothing is downloaded."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not __import__("torch").cuda.is_available():
    # Triton kernels run under its interpreter on a CPU-only machine (decided when triton is imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect server (and database) for every flow test of the session.

    Started once, with a generous start-up timeout: on a busy 2-core machine the server takes tens of seconds to
    come up, and a harness per test both paid that cost again and timed out under load.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield
