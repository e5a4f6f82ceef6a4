"""Read store chunks ahead of their use, on background threads, so reading overlaps compute.

Reading a chunk (Zarr decode, checksum, fp16 -> fp32) and scoring it (a matmul) use different resources
on a multi-core machine: the decoders and ``hashlib`` release the GIL, and so do torch kernels. With
reader threads ``depth`` chunks ahead, a pass over a store costs about ``max(read, compute)`` instead of
``read + compute``. Memory: at most ``depth + 1`` chunks of every store are alive at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from inflow.store.zarr_store import GradientStore

Chunk = tuple[np.ndarray, np.ndarray, list[str]]
"""What :meth:`GradientStore.read_chunk` returns: unit rows [rows, dim] float32, norms [rows], example ids."""


def _read_all(stores: Sequence[GradientStore], chunk: int, verify: bool) -> list[Chunk]:
    return [store.read_chunk(chunk, verify=verify) for store in stores]


def prefetch_chunks(stores: Sequence[GradientStore], chunks: Sequence[int], verify: bool = True,
                    depth: int = 2, readers: int = 1) -> Iterator[tuple[int, list[Chunk]]]:
    """Yield ``(chunk, [read_chunk(chunk) of every store])`` for ``chunks`` in order, read ``depth`` ahead.

    ``readers`` threads read (decode, checksum) different chunks at once; chunks are still yielded in order.
    ``depth=0`` reads in the calling thread (no background thread). An error raised while reading a chunk
    (a failed checksum, a missing chunk) is raised here, when that chunk's turn comes; chunks read ahead of
    an abandoned iteration are dropped.
    """
    if depth < 0 or readers < 1:
        raise ValueError(f"prefetch depth must be >= 0 and readers >= 1, got {depth} and {readers}")
    if depth == 0:
        for chunk in chunks:
            yield chunk, _read_all(stores, chunk, verify)
        return
    pending: deque[tuple[int, Future[list[Chunk]]]] = deque()
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="inflow-prefetch") as pool:
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(_read_all, stores, chunk, verify)))
                if len(pending) > depth:
                    done_chunk, future = pending.popleft()
                    yield done_chunk, future.result()
            while pending:
                done_chunk, future = pending.popleft()
                yield done_chunk, future.result()
        finally:
            for _, future in pending:
                future.cancel()
