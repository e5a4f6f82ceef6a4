"""Thread budget and the ordered, windowed map that runs gradient batches one per thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from inflow.parallel import available_cores, ordered_map, resolve_threads


def test_threads_zero_is_every_core_the_process_is_given() -> None:
    assert available_cores() >= 1
    assert resolve_threads(0) == available_cores() and resolve_threads(3) == 3
    with pytest.raises(ValueError, match=">= 0"):
        resolve_threads(-1)


def test_ordered_map_keeps_order_and_bounds_what_runs_ahead() -> None:
    started: list[int] = []
    consumed: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        return i * i

    with ThreadPoolExecutor(3) as pool:
        for i, result in enumerate(ordered_map(pool, work, range(20), window=4)):
            assert result == i * i
            with lock:
                assert len(started) <= i + 4  # never more than the window ahead of the consumer
            consumed.append(i)
    assert consumed == list(range(20))
    assert list(ordered_map(None, lambda x: x + 1, [1, 2], window=1)) == [2, 3]  # serial


def test_ordered_map_raises_at_the_failing_items_turn() -> None:
    def work(i: int) -> int:
        if i == 3:
            raise RuntimeError("boom")
        return i

    got: list[int] = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(RuntimeError, match="boom"):
        for value in ordered_map(pool, work, range(10), window=2):
            got.append(value)
    assert got == [0, 1, 2]
    with pytest.raises(ValueError, match="window"):
        list(ordered_map(ThreadPoolExecutor(1), work, [1], window=0))


def test_inflow_cores_overrides_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLOW_CORES", "3")
    assert available_cores() == 3 and resolve_threads(0) == 3
    monkeypatch.setenv("INFLOW_CORES", "zero")
    with pytest.raises(ValueError, match="whole number of cores"):
        available_cores()
