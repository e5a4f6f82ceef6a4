"""``benchmarks/store_write.py``: a real store's chunk writes are timed for both store dtypes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import store_write  # noqa: E402


def test_both_dtypes_are_written_and_timed(capsys: pytest.CaptureFixture[str]) -> None:
    store_write.main(["--quick", "--chunks", "2", "--dim", "256"])
    lines = [dict(pair.split("=", 1) for pair in line.split()) for line in capsys.readouterr().out.splitlines()[1:]]
    assert [line["dtype"] for line in lines] == ["float16", "float32"]
    for line in lines:
        assert (line["rows"], line["dim"], line["chunks"]) == ("128", "256", "2") and float(line["write_s"]) > 0
