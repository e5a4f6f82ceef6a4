"""Running independent pieces of CPU work on several threads: how many cores a process has, and an ordered map.

Torch's intra-op threads split one operation (a matmul, a reduction) over cores, and the split changes the float
summation order, so the bits depend on the thread count. Running *whole batches* concurrently instead, each on one
intra-op thread, keeps every batch's bits what a single thread computes, whatever the number of threads
(torch ops release the GIL, so the threads run in parallel). Gradient extraction does that on a CPU
(:func:`inflow.pipeline.features.featurize`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


CORES_ENV = "INFLOW_CORES"  # overrides the count, e.g. for each of several worker processes sharing a machine


def available_cores() -> int:
    """The cores this process may run on: ``$INFLOW_CORES`` when set, else its CPU affinity (as a container or
    ``taskset`` limits it). A Dask ``LocalCluster`` of the features stage gives each worker its share this way."""
    given = os.environ.get(CORES_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{CORES_ENV}={given!r}: set it to a whole number of cores >= 1, or unset it")
        return int(given)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int) -> int:
    """A ``threads`` setting as a count: 0 is every core this process is given, else the number itself."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: every core this process is given), got {threads}")
    return threads or available_cores()


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads (0: unchanged), one body per process at a time.

    Torch's thread count is process-wide, so bodies in several threads (chunk extractions mapped on a thread pool)
    take turns, and the count is restored after. Work inside a body may still run on threads of its own
    (:func:`single_thread_pool`).
    """
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def single_thread_pool(workers: int, name: str = "inflow") -> ThreadPoolExecutor:
    """``workers`` threads that each run torch at one intra-op thread, set in the thread itself.

    Setting it in the thread matters: torch's setting reaches a new thread's OpenMP only at its first parallel
    region, and MKL keeps a per-thread count (``mkl_set_num_threads_local``), so a matmul that comes first would
    otherwise run at MKL's default, every core, with dynamic adjustment under load: other bits.
    """
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(1,))


def ordered_map(executor: Executor | None, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``fn(item)`` for every item, yielded in the items' order, at most ``window`` submitted ahead of the consumer.

    The window bounds memory (each result is held until it is consumed). Without an executor: a plain serial map.
    An exception from ``fn`` is raised at its item's turn; items not yet started are then cancelled.
    """
    if executor is None:
        yield from map(fn, items)
        return
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
