"""Filling a store, whatever its rows are: the machinery every kind of store shares (gradient features, JVP
embeddings, Hessian products).

A *job* (:class:`StoreJob`: a frozen, picklable dataclass naming its inputs by path) describes one store; its
``context()`` builds, once per process, a :class:`StoreContext` that holds the job's encoded rows and computes
them chunk by chunk. Everything else is shared:

* :func:`open_store` (once, in the parent, before any fan-out) creates the store, or reopens it, checks its
  settings and grows it when the data gained rows (``inflow.store.append``); it returns the pending chunks.
* :func:`extract_chunk` (anywhere: a thread, a Dask worker on another node) fills one chunk.
* :func:`extract_store` does both in one process; :func:`main` is its command line (``python -m
  inflow.pipeline.features --job job.json``; a SIGKILLed run resumes where it stopped when started again).

A chunk is the unit of fan-out, of resume (only chunks not marked done are extracted) and of integrity (each is
checksummed). Within a chunk, rows are batched by length, so the result does not depend on how many workers
there are or in which order chunks run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from inflow.data.batching import Encoded
from inflow.data.pool import load_pool
from inflow.data.render import encode_pool, encode_targets
from inflow.data.targets import target_sources
from inflow.devices import wants_gpu
from inflow.errors import InflowError, StoreMismatchError
from inflow.parallel import torch_threads
from inflow.paths import POOL_SPLIT
from inflow.pipeline.feature_jobs import job_from_json, job_summary
from inflow.store import GradientStore, RowManifest, StoreAttrs, row_hash

log = logging.getLogger(__name__)


class StoreJob(Protocol):
    """A store to fill, as data (picklable, hashable): :class:`FeatureJob`, or a job that builds its own
    :class:`StoreContext` with ``context()`` (``inflow.pipeline.embed.EmbedJob``)."""

    store: str
    task: str | None
    threads: int
    device: str

    def context(self) -> StoreContext: ...


# the job and its plan live in feature_jobs; re-exported here, where flows, tasks and tests have always found them

def row_manifest(rows: Sequence[Encoded]) -> RowManifest:
    """Ids and content hashes of encoded rows: a row's hash covers its id, token ids and labels, i.e. everything
    its features are computed from (a changed tokenizer, template or truncation changes it too)."""
    hashes = [row_hash(r.example_id, np.asarray(r.input_ids, dtype="<i8").tobytes(),
                       np.asarray(r.labels, dtype="<i8").tobytes()) for r in rows]
    return RowManifest.build([r.example_id for r in rows], hashes)


class StoreContext:
    """What a process needs to fill chunks of one job's store: the job's rows (encoded, in store order), their
    manifest, the store attrs they are written under, and :meth:`featurize`. One subclass per kind of store:
    gradient features (``inflow.pipeline.features.FeatureContext``) and JVP embeddings (``inflow.pipeline.embed``)."""

    rows: list[Encoded]
    manifest: RowManifest
    index: dict[str, int]
    attrs: StoreAttrs

    def _set_rows(self, rows: list[Encoded]) -> None:
        self.rows = rows
        self.manifest = row_manifest(rows)
        self.index = {example_id: i for i, example_id in enumerate(self.manifest.ids)}

    def featurize(self, rows: list[Encoded], job) -> torch.Tensor:
        """The stored rows (before normalisation) of ``rows``: ``[len(rows), attrs.dim]`` float32 on the CPU."""
        raise NotImplementedError

    def intra_op_threads(self, job) -> int:
        """Torch intra-op threads while this context computes a chunk (0: leave torch's setting)."""
        return job.threads

    def disagreement(self, store: GradientStore, wanted: RowManifest) -> str:
        """Why this context cannot fill rows ``wanted`` of ``store`` ('' when it can)."""
        problems = store.attrs.settings_diff(self.attrs, ("in the store", "here"))
        if problems:
            return "settings differ: " + "; ".join(problems)
        missing = [i for i in wanted.ids if i not in self.index]
        if missing:
            return f"{len(missing)} of its rows are not in the data (first: {missing[:5]})"
        at = np.fromiter((self.index[i] for i in wanted.ids), dtype=np.int64, count=len(wanted))
        changed = np.flatnonzero(self.manifest.hashes[at] != wanted.hashes)
        if changed.size:
            return f"{changed.size} of its rows changed content (first: {[wanted.ids[i] for i in changed[:5]]})"
        return ""


def encode_split(job, tokenizer) -> list[Encoded]:
    """The encoded rows of the job's split: every pool row, or target task ``job.task``'s validation rows (or its
    test rows, ``job.target_rows == "test"``; only that task is read: a stage plans one job per task)."""
    if job.split == POOL_SPLIT:
        rows, _dropped = encode_pool(load_pool(job.pool), tokenizer, job.max_seq_len, label_newline=job.label_newline)
        return rows
    task = next(s for s in target_sources(job.targets, job.targets_format) if s.name == job.task).load()
    which = getattr(job, "target_rows", "val")
    if which not in ("val", "test"):
        raise ValueError(f"target_rows must be val or test, got {which!r}")
    rows, dropped = encode_targets(task.val if which == "val" else task.test, tokenizer, job.max_seq_len)
    if dropped:
        raise ValueError(f"{len(dropped)} {'validation' if which == 'val' else 'test'} rows of {job.task} lose "
                         f"their answer at max_seq_len={job.max_seq_len}; raise data.max_seq_len")
    if which == "test" and not rows:
        raise InflowError(f"target task {job.task} has no test rows: give it a test split, or leave it out")
    return rows


def select_rows(rows: list[Encoded], ids_file: str) -> list[Encoded]:
    """The rows named by ``ids_file`` (a JSON list of example ids), in its order; all rows when it is ''."""
    if not ids_file:
        return rows
    wanted = json.loads(Path(ids_file).read_text())
    by_id = {r.example_id: r for r in rows}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise InflowError(f"{ids_file} names {len(missing)} rows that are not in the data (first: {missing[:5]}); "
                          "rerun the stage that wrote it")
    return [by_id[i] for i in wanted]


_CONTEXTS: OrderedDict[object, StoreContext] = OrderedDict()  # per process: a model each, so only a couple
_CONTEXTS_LOCK = threading.Lock()
_CONTEXTS_KEPT = 2
# A GPU's chunks take turns: each batch is sized for the whole device less one model's weights
# (inflow.devices.default_batch_tokens), so two chunks computing at once, or a second model loaded beside the first,
# could run it out of memory. Chunk threads of one process (features.workers with dask_address '') then overlap only
# their reads and writes; a process holds one GPU context at a time. Reentrant: a chunk builds its context under it.
# Chunks of compiled layers (features.compile) take the same turns, on any device.
_GPU_TURN = threading.RLock()


def _context(job: StoreJob, refresh: bool = False) -> StoreContext:
    """The process's context for ``job``, built on first use (or again with ``refresh``: the data changed).

    A GPU job's context replaces any other GPU job's (one model per GPU; see ``_GPU_TURN``)."""
    with _CONTEXTS_LOCK:
        if refresh or job not in _CONTEXTS:
            _CONTEXTS.pop(job, None)
            if wants_gpu(job.device):
                for other in [j for j in _CONTEXTS if wants_gpu(j.device)]:
                    del _CONTEXTS[other]
            _CONTEXTS[job] = job.context()
            while len(_CONTEXTS) > _CONTEXTS_KEPT:
                _CONTEXTS.popitem(last=False)
        _CONTEXTS.move_to_end(job)
        return _CONTEXTS[job]


def open_store(job: StoreJob, *, rebuild: bool = False) -> list[int]:
    """Create (or reopen, validate and grow) the job's store; return the chunks still to extract.

    Call it once per store before fanning out: it re-reads the data (new rows are appended to the store,
    see :mod:`inflow.store.append`), and refuses a store whose settings differ, whose rows changed content or
    left the data (:class:`StoreMismatchError`). With ``rebuild`` such a store is deleted and built anew instead:
    the features *stage* does this, because it owns its outputs (DVC keeps the previous version in its cache).
    """
    local = "://" not in job.store
    if local:
        Path(job.store).parent.mkdir(parents=True, exist_ok=True)
    ctx = _context(job, refresh=True)
    try:
        store = GradientStore.create_or_open(job.store, ctx.attrs, ctx.manifest)
    except StoreMismatchError as exc:
        if not (rebuild and local):
            raise
        log.warning("%s was built from other inputs or settings (%s): rebuilding it", job.store,
                    "; ".join(exc.problems) or exc)
        shutil.rmtree(job.store)
        store = GradientStore.create_or_open(job.store, ctx.attrs, ctx.manifest)
    return store.pending_chunks()


def remove_stale_stores(split_dir: str | Path, jobs: Sequence[StoreJob]) -> list[str]:
    """Delete the ``*.zarr`` stores under ``split_dir`` that no job plans (checkpoints or tasks that are gone).

    The features stage keeps its stores between runs (to resume and grow them), so it prunes what a new plan
    no longer produces. Returns the removed paths.
    """
    planned = {Path(job.store).resolve() for job in jobs}
    stale = [p for p in sorted(Path(split_dir).glob("**/*.zarr")) if p.resolve() not in planned]
    for path in stale:
        log.warning("%s: no longer produced by the features stage (checkpoint or task gone); removing it", path)
        shutil.rmtree(path)
    return [str(p) for p in stale]


def extract_chunk(job: StoreJob, chunk: int) -> int:
    """Extract, sketch and write chunk ``chunk`` of the job's (already opened) store; returns the rows written.

    The chunk's rows are the ones the store lists (by id, checked against their content hash), so a worker
    whose view of the data differs from the parent's refuses rather than writing other rows' features. Where
    chunks take turns (:func:`_takes_turns`), only the features hold the turn, not the store's read or the
    chunk's write (compression, checksum, disk): chunk threads overlap those with another chunk's gradients.
    """
    return _write_chunk(chunk, *_compute_chunk(job, chunk))


def extract_store(job: StoreJob, progress: bool = True) -> int:
    """Open (create, grow) the job's store and extract every pending chunk in order; returns the rows written.

    Each chunk is written on a second thread while the next one computes (one write in flight at most). Resumable:
    a killed run leaves finished chunks done, and running it again extracts only the others.
    """
    pending = open_store(job)
    written = 0
    name = f"{Path(job.store).name}" + (f" ({job.task})" if job.task else "")
    with ThreadPoolExecutor(1, thread_name_prefix="inflow-write") as writer:  # on an error, waits for its write
        in_flight: Future[int] | None = None
        for chunk in tqdm(pending, desc=name, unit="chunk", disable=not progress):
            computed = _compute_chunk(job, chunk)
            if in_flight is not None:
                written += in_flight.result()
            in_flight = writer.submit(_write_chunk, chunk, *computed)
        if in_flight is not None:
            written += in_flight.result()
    return written


def _takes_turns(job: StoreJob) -> bool:
    """Whether the job's chunks compute one at a time in a process: on a GPU (see ``_GPU_TURN``), and with compiled
    layers (``FeatureJob.compile``: the compiler's caches are process-wide, not made for concurrent callers)."""
    return wants_gpu(job.device) or bool(getattr(job, "compile", False))


def _compute_chunk(job: StoreJob, chunk: int) -> tuple[GradientStore, RowManifest, torch.Tensor]:
    """The store, the chunk's rows (``store.rows(chunk)``) and their features [rows, out_dim] float32 (CPU)."""
    store = GradientStore.open(job.store, writable=True)
    wanted = store.rows(chunk)
    with _GPU_TURN if _takes_turns(job) else contextlib.nullcontext():
        ctx = _context(job)
        problem = ctx.disagreement(store, wanted)
        if problem:  # a long-lived worker may hold a context from before the data or model changed: rebuild once
            ctx = _context(job, refresh=True)
            problem = ctx.disagreement(store, wanted)
        if problem:
            raise StoreMismatchError(f"chunk {chunk} of the gradient store at {job.store} cannot be extracted: "
                                     f"{problem}. The data or model changed after the store was opened: rerun the "
                                     "features stage (it reopens the store against the current data).")
        rows = [ctx.rows[ctx.index[i]] for i in wanted.ids]
        with torch_threads(ctx.intra_op_threads(job)):
            return store, wanted, ctx.featurize(rows, job)


def _write_chunk(chunk: int, store: GradientStore, wanted: RowManifest, feats: torch.Tensor) -> int:
    store.write_chunk(chunk, feats.numpy(), list(wanted.ids))
    return len(wanted.ids)


def main(argv: Sequence[str] | None, job_type: type, prog: str) -> int:
    """``python -m <prog> --job job.json``: fill one store of ``job_type`` without Prefect (exit 1 on a user error).
    The job file is the job as JSON (its ``to_json``); rerun the same command to resume a killed run."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}",
                                     description="Fill (resume, grow) one store in this process.")
    parser.add_argument("--job", required=True, help=f"a {job_type.__name__} as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        job = job_from_json(job_type, Path(args.job).read_text(), f"a {job_type.__name__}")
        written = extract_store(job, progress=not args.no_progress)
    except (InflowError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**job_summary(job), "rows_written": written}))
    return 0
