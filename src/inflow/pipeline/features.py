"""The ``features`` step: per-example LoRA gradient features of every row, sketched, into Zarr stores.

One store per (checkpoint, split): the pool gets Adam features (the checkpoint's AdamW state applied to
the gradient, DESIGN §4), target validation rows get plain (SGD) gradients. A store is filled chunk by
chunk; a chunk is the unit of fan-out (Prefect maps over chunks), of resume (only chunks not marked done
are extracted) and of integrity (each is checksummed). Within a chunk, rows are batched by length, so the
result does not depend on how many workers there are or in which order chunks run.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import inflow
from inflow.config import DataConfig, FeaturesConfig, SketchConfig
from inflow.data.batching import Encoded, collate, length_batches
from inflow.data.pool import load_pool
from inflow.data.render import encode_pool, encode_targets
from inflow.data.targets import load_target_tasks
from inflow.gradients.blocks import lora_blocks, lora_parameters
from inflow.gradients.features import adam_features
from inflow.gradients.per_example import per_example_grads
from inflow.models.loading import load_causal_lm, model_fingerprint, resolve_model_dir
from inflow.models.tokenizer import load_tokenizer
from inflow.paths import POOL_SPLIT, store_path
from inflow.sketch import BlockSketch
from inflow.store import GradientStore, StoreAttrs
from inflow.training.checkpoint import find_checkpoints, load_adam_state, load_adapter_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureJob:
    """One store to fill: the rows of ``split`` (``pool``, or target task ``task``) at ``checkpoint``."""

    checkpoint: str  # HF Trainer checkpoint directory
    base_model: str  # the model the adapter was trained on
    split: str  # "pool" or "targets"
    task: str | None  # target task name for split "targets"
    store: str  # store path
    pool: str  # pool file (split "pool")
    targets: str  # target tasks root (split "targets")
    max_seq_len: int
    batch_size: int
    chunk_rows: int
    dtype: str
    eps_inside_sqrt: bool
    sketch_kind: str
    sketch_dim: int
    sketch_seed: int

    @property
    def feature_kind(self) -> str:
        return "adam" if self.split == POOL_SPLIT else "sgd"


def checkpoints_for(cfg: FeaturesConfig, warmup_dir: str | Path, default_base: str | Path) -> tuple[list[Path], str]:
    """The checkpoints to extract at and their base model: params' external list, else the warmup run."""
    if cfg.checkpoints:
        if not cfg.base_model:
            raise ValueError("features.checkpoints is set: also set features.base_model to the model they were "
                             "trained from")
        return [Path(c) for c in cfg.checkpoints], cfg.base_model
    return find_checkpoints(warmup_dir), str(default_base)


def plan_jobs(cfg: FeaturesConfig, sketch: SketchConfig, data: DataConfig, split: str, warmup_dir: str | Path,
              default_base: str | Path) -> list[FeatureJob]:
    """Every (checkpoint, task) store of ``split``."""
    checkpoints, base = checkpoints_for(cfg, warmup_dir, default_base)
    tasks: list[str | None] = [None]
    if split != POOL_SPLIT:
        tasks = [t.name for t in load_target_tasks(data.targets)]
    return [
        FeatureJob(checkpoint=str(ckpt), base_model=str(base), split=split, task=task,
                   store=str(store_path(split, ckpt.name, task)), pool=data.pool, targets=data.targets,
                   max_seq_len=data.max_seq_len, batch_size=cfg.batch_size, chunk_rows=cfg.chunk_rows,
                   dtype=cfg.dtype, eps_inside_sqrt=cfg.adam_eps_inside_sqrt, sketch_kind=sketch.kind,
                   sketch_dim=sketch.dim, sketch_seed=sketch.seed)
        for ckpt in checkpoints for task in tasks
    ]


class _Context:
    """Everything a worker needs to extract chunks of one job; built once per process and job."""

    def __init__(self, job: FeatureJob) -> None:
        tokenizer = load_tokenizer(resolve_model_dir(job.base_model))
        if job.split == POOL_SPLIT:
            frame = load_pool(job.pool)
            self.rows, _dropped = encode_pool(frame, tokenizer, job.max_seq_len)
        else:
            task = next(t for t in load_target_tasks(job.targets) if t.name == job.task)
            self.rows, dropped = encode_targets(task.val, tokenizer, job.max_seq_len)
            if dropped:
                raise ValueError(f"{len(dropped)} validation rows of {job.task} lose their answer at "
                                 f"max_seq_len={job.max_seq_len}; raise data.max_seq_len")
        self.pad_id = tokenizer.pad_token_id
        self.model = load_adapter_into(load_causal_lm(job.base_model), job.checkpoint)
        self.model.eval()
        params = lora_parameters(self.model)
        self.adam = None
        if job.feature_kind == "adam":
            self.adam = load_adam_state(job.checkpoint, [(name, p.shape) for name, p in params])
        self.sketch = BlockSketch(job.sketch_kind, job.sketch_seed, [b.size for b in lora_blocks(self.model)],
                                  job.sketch_dim)
        self.attrs = StoreAttrs(
            model_id=str(job.base_model), model_hash=model_fingerprint(job.base_model),
            checkpoint=Path(job.checkpoint).name, checkpoint_step=_step_of(job.checkpoint),
            lora_targets=tuple(sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in params})),
            feature_kind=job.feature_kind, sketch=self.sketch.to_attrs(), dim=self.sketch.out_dim,
            dtype=job.dtype, n_rows=len(self.rows), chunk_rows=job.chunk_rows, data_hash=_data_hash(self.rows),
            code_version=inflow.__version__)


def _step_of(checkpoint: str) -> int:
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _data_hash(rows: list[Encoded]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.example_id.encode())
        digest.update(np.asarray(row.input_ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(row.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _context(job: FeatureJob) -> _Context:
    return _Context(job)


def open_store(job: FeatureJob) -> list[int]:
    """Create (or reopen and validate) the job's store; return the chunks still to extract."""
    Path(job.store).parent.mkdir(parents=True, exist_ok=True)
    store = GradientStore.create_or_open(job.store, _context(job).attrs)
    return store.pending_chunks()


def featurize(ctx: _Context, rows: list[Encoded], batch_size: int, eps_inside_sqrt: bool) -> torch.Tensor:
    """Sketched features of ``rows`` in row order: [len(rows), sketch.out_dim] float32."""
    out = torch.empty(len(rows), ctx.sketch.out_dim)
    for batch_idx in length_batches([len(r) for r in rows], batch_size):
        batch = collate([rows[i] for i in batch_idx], ctx.pad_id)
        grads, _losses = per_example_grads(ctx.model, batch)
        if ctx.adam is not None:
            a = ctx.adam
            grads = adam_features(grads, a.exp_avg, a.exp_avg_sq, a.beta1, a.beta2, a.eps, eps_inside_sqrt)
        out[batch_idx] = ctx.sketch.project(grads.float())
    return out


def extract_chunk(job: FeatureJob, chunk: int) -> int:
    """Extract, sketch and write chunk ``chunk`` of the job's store; returns the rows written."""
    ctx = _context(job)
    store = GradientStore.open(job.store, writable=True)
    start, stop = store.chunk_bounds(chunk)
    rows = ctx.rows[start:stop]
    feats = featurize(ctx, rows, job.batch_size, job.eps_inside_sqrt)
    store.write_chunk(chunk, feats.numpy(), [r.example_id for r in rows])
    return stop - start


def job_summary(job: FeatureJob) -> dict:
    """A JSON-able description of a job for logs and manifests."""
    return {k: v for k, v in asdict(job).items() if k in ("checkpoint", "split", "task", "store")}
