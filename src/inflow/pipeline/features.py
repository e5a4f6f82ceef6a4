"""The ``features`` step: per-example LoRA gradient features of every row, sketched, into Zarr stores.

One store per (checkpoint, split): the pool gets Adam features (the checkpoint's AdamW state applied to
the gradient, DESIGN §4), target validation rows get plain (SGD) gradients. A store is filled chunk by
chunk; a chunk is the unit of fan-out (Prefect/Dask map over chunks), of resume (only chunks not marked done
are extracted) and of integrity (each is checksummed). Within a chunk, rows are batched by length, so the
result does not depend on how many workers there are or in which order chunks run.

* :func:`open_store` (once, in the parent, before any fan-out) creates the store, or reopens it, checks its
  settings and grows it when the data gained rows (``inflow.store.append``); it returns the pending chunks.
* :func:`extract_chunk` (anywhere: a thread, a Dask worker on another node) fills one chunk.
* :func:`extract_store` does both in one process; ``python -m inflow.pipeline.features --job job.json`` runs it
  from a shell (a SIGKILLed run resumes where it stopped when started again).

Bit-identity: a store's bytes are a function of its job (model, checkpoint, data, settings), whatever the
order, number or placement of the processes that filled it, given the same hardware and software and the
same ``features.threads`` (torch's CPU kernels sum in a thread-count-dependent order) and the same
``features.batch_size`` and ``features.sketch_group_mib`` (BLAS picks its kernel by the number of rows). The store
records all of these, with content hashes of the checkpoint (:func:`extraction_settings`,
:mod:`inflow.store.identity`), and refuses to be resumed or grown under other ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

import inflow
from inflow.data.batching import Encoded, collate, length_batches
from inflow.data.pool import load_pool
from inflow.data.render import encode_pool, encode_targets
from inflow.data.targets import target_sources
from inflow.devices import autocast, autocast_dtype, resolve_device
from inflow.errors import InflowError, StoreMismatchError
from inflow.gradients.blocks import lora_blocks, lora_parameters
from inflow.gradients.features import adam_features
from inflow.gradients.per_example import per_example_grads
from inflow.models.loading import load_causal_lm, model_fingerprint, resolve_model_dir
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.paths import POOL_SPLIT
from inflow.pipeline.feature_jobs import (
    FeatureJob,
    checkpoints_for,
    job_from_json,
    job_summary,
    plan_jobs,
)
from inflow.sketch import BlockSketch
from inflow.sketch.cache import MIB
from inflow.sketch.groups import SketchGroups
from inflow.store import GradientStore, RowManifest, StoreAttrs, row_hash
from inflow.store.attrs import FEATURE_FORMAT
from inflow.store.identity import checkpoint_digests
from inflow.training.checkpoint import AdamState, load_adam_state, load_adapter_into

log = logging.getLogger(__name__)


class StoreJob(Protocol):
    """A store to fill, as data (picklable, hashable): :class:`FeatureJob`, or a job that builds its own
    :class:`StoreContext` with ``context()`` (``inflow.pipeline.embed.EmbedJob``)."""

    store: str
    task: str | None
    threads: int


# the job and its plan live in feature_jobs; re-exported here, where flows, tasks and tests have always found them
__all__ = [
    "FeatureJob",
    "StoreContext",
    "StoreJob",
    "checkpoints_for",
    "encode_split",
    "extract_chunk",
    "extract_store",
    "featurize",
    "job_summary",
    "main",
    "open_store",
    "plan_jobs",
    "remove_stale_stores",
    "row_manifest",
    "select_rows",
    "torch_threads",
]


def row_manifest(rows: Sequence[Encoded]) -> RowManifest:
    """Ids and content hashes of encoded rows: a row's hash covers its id, token ids and labels, i.e. everything
    its features are computed from (a changed tokenizer, template or truncation changes it too)."""
    hashes = [row_hash(r.example_id, np.asarray(r.input_ids, dtype="<i8").tobytes(),
                       np.asarray(r.labels, dtype="<i8").tobytes()) for r in rows]
    return RowManifest.build([r.example_id for r in rows], hashes)


class StoreContext:
    """What a process needs to fill chunks of one job's store: the job's rows (encoded, in store order), their
    manifest, the store attrs they are written under, and :meth:`featurize`. One subclass per kind of store:
    gradient features (:class:`_Context`) and JVP embeddings (``inflow.pipeline.embed``)."""

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
    """The encoded rows of the job's split: every pool row, or target task ``job.task``'s validation rows (only
    that task is read: a stage plans one job per task)."""
    if job.split == POOL_SPLIT:
        rows, _dropped = encode_pool(load_pool(job.pool), tokenizer, job.max_seq_len, label_newline=job.label_newline)
        return rows
    task = next(s for s in target_sources(job.targets, job.targets_format) if s.name == job.task).load()
    rows, dropped = encode_targets(task.val, tokenizer, job.max_seq_len)
    if dropped:
        raise ValueError(f"{len(dropped)} validation rows of {job.task} lose their answer at "
                         f"max_seq_len={job.max_seq_len}; raise data.max_seq_len")
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


class _Context(StoreContext):
    """Gradient features of a :class:`FeatureJob`; built once per process and job."""

    def __init__(self, job: FeatureJob) -> None:
        tokenizer = load_tokenizer(resolve_model_dir(job.base_model))
        self._set_rows(select_rows(encode_split(job, tokenizer), job.rows))
        self.pad_id = pad_token_id(tokenizer)
        self.device = resolve_device(job.device)
        self.autocast = autocast_dtype(job.precision, self.device)
        self.model = load_adapter_into(load_causal_lm(job.base_model), job.checkpoint).to(self.device)
        self.model.eval()
        params = lora_parameters(self.model)
        self.adam = None
        self.preconditioner = None
        if job.feature_kind in ("adam", "precond"):
            adam = load_adam_state(job.checkpoint, [(name, p.shape) for name, p in params])
            self.adam = dataclasses.replace(adam, exp_avg=adam.exp_avg.to(self.device),
                                            exp_avg_sq=adam.exp_avg_sq.to(self.device))
            if job.feature_kind == "precond":  # Influence Distillation's a (DESIGN §6), one vector for every row
                from inflow.methods.distill.adam import adam_preconditioner

                self.preconditioner = adam_preconditioner(self.adam.exp_avg_sq.float(), adam.step, adam.beta1,
                                                          adam.beta2, adam.eps)
        self.sketch = BlockSketch(job.sketch_kind, job.sketch_seed, [b.size for b in lora_blocks(self.model)],
                                  job.sketch_dim)
        self.hvp_batches: list[dict[str, torch.Tensor]] = []
        extraction = extraction_settings(job, self.device, self.adam)
        if job.hvp_task:  # the Hessian of this target task's loss, applied to every row's feature
            hvp_rows = encode_split(dataclasses.replace(job, split="targets", task=job.hvp_task), tokenizer)
            self.hvp_batches = [collate([hvp_rows[i] for i in b], self.pad_id)
                                for b in length_batches([len(r) for r in hvp_rows], job.batch_size)]
            extraction["hvp"] = {"task": job.hvp_task, "rows": row_manifest(hvp_rows).digest()}
        adapter_hash, optimizer_hash = checkpoint_digests(job.checkpoint, optimizer=self.adam is not None)
        self.attrs = StoreAttrs(
            model_id=str(job.base_model), model_hash=model_fingerprint(job.base_model),
            checkpoint=Path(job.checkpoint).name, checkpoint_step=_step_of(job.checkpoint),
            lora_targets=tuple(sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in params})),
            feature_kind=job.feature_kind, sketch=self.sketch.to_attrs(), dim=self.sketch.out_dim,
            dtype=job.dtype, n_rows=len(self.rows), chunk_rows=job.chunk_rows, data_hash=self.manifest.digest(),
            code_version=inflow.__version__, precision=job.precision, adapter_hash=adapter_hash,
            optimizer_hash=optimizer_hash, extraction=extraction, feature_format=FEATURE_FORMAT)

    def featurize(self, rows: list[Encoded], job: FeatureJob) -> torch.Tensor:
        return featurize(self, rows, job.batch_size, job.eps_inside_sqrt, job.sketch_group_mib * MIB)


def extraction_settings(job: FeatureJob, device: torch.device, adam: AdamState | None) -> dict:
    """The job's settings that the feature bytes depend on beyond the model, checkpoint, rows and sketch.

    Adam's betas/eps (read from the checkpoint) and where eps goes change the features themselves; batch size,
    sketch group size and (CPU) thread count change the floating-point summation order, so the bytes; the
    device type changes the kernels. Where chunks run (threads, Dask workers) does not (tested), so it is not
    recorded.
    """
    settings: dict = {"batch_size": job.batch_size, "sketch_group_mib": job.sketch_group_mib,
                      "threads": job.threads, "device": device.type}
    if adam is not None and job.feature_kind == "adam":
        settings["adam"] = {"beta1": adam.beta1, "beta2": adam.beta2, "eps": adam.eps,
                            "eps_inside_sqrt": job.eps_inside_sqrt}
    if adam is not None and job.feature_kind == "precond":
        settings["adam"] = {"beta1": adam.beta1, "beta2": adam.beta2, "eps": adam.eps, "step": adam.step}
    return settings


def _step_of(checkpoint: str) -> int:
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


_CONTEXTS: OrderedDict[object, StoreContext] = OrderedDict()  # per process: a model each, so only a couple
_CONTEXTS_LOCK = threading.Lock()
_CONTEXTS_KEPT = 2


def _build_context(job: StoreJob) -> StoreContext:
    """A :class:`FeatureJob`'s context, or the one another job type builds itself (``job.context()``)."""
    return _Context(job) if isinstance(job, FeatureJob) else job.context()


def _context(job: StoreJob, refresh: bool = False) -> StoreContext:
    """The process's context for ``job``, built on first use (or again with ``refresh``: the data changed)."""
    with _CONTEXTS_LOCK:
        if refresh or job not in _CONTEXTS:
            _CONTEXTS.pop(job, None)
            _CONTEXTS[job] = _build_context(job)
            while len(_CONTEXTS) > _CONTEXTS_KEPT:
                _CONTEXTS.popitem(last=False)
        _CONTEXTS.move_to_end(job)
        return _CONTEXTS[job]


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads (0: unchanged), one body per process at a time.

    Torch's thread count is process-wide, so concurrent extractions in threads take turns (they already do:
    :func:`~inflow.gradients.per_example.per_example_grads` locks the model), and the count is restored after.
    """
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


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


def featurize(ctx: _Context, rows: list[Encoded], batch_size: int, eps_inside_sqrt: bool,
              group_bytes: int) -> torch.Tensor:
    """Sketched features of ``rows`` in row order: [len(rows), sketch.out_dim] float32.

    The features of consecutive batches are projected together, up to ``group_bytes`` (see
    :mod:`inflow.sketch.groups`); ``rows`` is one chunk, so the groups depend on the chunk alone.
    """
    groups = SketchGroups(ctx.sketch, torch.empty(len(rows), ctx.sketch.out_dim), group_bytes)
    for batch_idx in length_batches([len(r) for r in rows], batch_size):
        batch = collate([rows[i] for i in batch_idx], ctx.pad_id)
        # autocast covers the forward/backward only; per-example grads, Adam and sketch run in float32
        with autocast(ctx.device, ctx.autocast):
            grads, _losses = per_example_grads(ctx.model, batch)
        if ctx.preconditioner is not None:
            grads = grads.float() * ctx.preconditioner  # a ⊙ g
        elif ctx.adam is not None:
            a = ctx.adam
            grads = adam_features(grads, a.exp_avg, a.exp_avg_sq, a.beta1, a.beta2, a.eps, eps_inside_sqrt)
        if ctx.hvp_batches:  # H_t Γ(z) for every row of the batch at once (batched double backward)
            from inflow.methods.distill.hessian import target_hvp

            grads = target_hvp(ctx.model, ctx.hvp_batches, grads.float())
        groups.add(batch_idx, grads.float())
    return groups.finish()


def extract_chunk(job: StoreJob, chunk: int) -> int:
    """Extract, sketch and write chunk ``chunk`` of the job's (already opened) store; returns the rows written.

    The chunk's rows are the ones the store lists (by id, checked against their content hash), so a worker
    whose view of the data differs from the parent's refuses rather than writing other rows' features.
    """
    store = GradientStore.open(job.store, writable=True)
    wanted = store.rows(chunk)
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
    with torch_threads(job.threads):
        feats = ctx.featurize(rows, job)
    store.write_chunk(chunk, feats.numpy(), list(wanted.ids))
    return len(rows)


def extract_store(job: StoreJob, progress: bool = True) -> int:
    """Open (create, grow) the job's store and extract every pending chunk in order; returns the rows written.

    Resumable: a killed run leaves finished chunks done, and running it again extracts only the others.
    """
    pending = open_store(job)
    written = 0
    name = f"{Path(job.store).name}" + (f" ({job.task})" if job.task else "")
    for chunk in tqdm(pending, desc=name, unit="chunk", disable=not progress):
        written += extract_chunk(job, chunk)
    return written


def main(argv: Sequence[str] | None = None, job_type: type = FeatureJob, prog: str = "inflow.pipeline.features") -> int:
    """``python -m inflow.pipeline.features --job job.json``: fill one store without Prefect (exit 1 on a user
    error). The job file is the job as JSON (:meth:`FeatureJob.to_json`); rerun the same command to resume a killed
    run. ``job_type``/``prog``: the same command for another kind of store (``python -m inflow.pipeline.embed``)."""
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


if __name__ == "__main__":
    raise SystemExit(main())
