"""In2Core's ``in2core_grads`` and ``in2core`` steps (DESIGN §6), on the stores every method shares.

* :func:`train_pool_model` (``in2core.model: pool``, the paper's setting) trains a LoRA of the selector on the whole
  pool, with warmup's training settings for ``in2core.train_epochs`` epochs; with ``model: warmup`` the gradients
  come from a checkpoint of ``features.warmup_dir`` instead.
* :func:`in2core_jobs` are the features jobs of that checkpoint: plain (SGD) gradients of every pool row, of every
  target task's validation rows (what the coreset serves) and test rows (coverage), through the extraction code,
  sketch and store of LESS's features (resumed, grown and identity-checked the same way).
* :func:`run_in2core` computes DataInf's influence of every pool row on each task's mean validation gradient,
  takes the proponents (most negative influence first) as the coreset and, when the stores hold every layer,
  reports how well each reduction of ``in2core.compare`` ranks against all layers and what it saves.

Reduced layers (``in2core.layers`` other than ``all``) are a property of the stores: only those layers' LoRA
weights get gradients (``FeatureJob.layers``), so the backward pass and the store shrink with them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import torch

from inflow.config import (
    DataConfig,
    FeaturesConfig,
    In2CoreConfig,
    SelectConfig,
    SketchConfig,
    WarmupConfig,
)
from inflow.data.pool import load_pool
from inflow.data.targets import load_targets, target_sources
from inflow.errors import InflowError
from inflow.files import atomic_write_text
from inflow.methods.in2core import Blocks, fit_datainf, kept_blocks
from inflow.methods.in2core.layers import layers_text
from inflow.paths import IN2CORE, POOL_SPLIT, selection_dir
from inflow.pipeline.feature_jobs import FeatureJob, checkpoints_for, plan_jobs
from inflow.pipeline.stores import remove_stale_stores
from inflow.pipeline.train import run_warmup
from inflow.selection import round_robin, selection_size, top_k, write_selection
from inflow.store import GradientStore
from inflow.store.attrs import require_pairing

log = logging.getLogger(__name__)

POOL_MODEL = IN2CORE / "model"  # in2core.model: pool — the LoRA trained on the whole pool
GRADS = IN2CORE / "grads"
MANIFEST = IN2CORE / "grads.json"  # which checkpoint the stores come from


def in2core_store_path(checkpoint: str, part: str, task: str | None = None) -> Path:
    """``data/in2core/grads/<checkpoint>/pool.zarr``, or ``.../<val|test>/<task>.zarr``."""
    return GRADS / checkpoint / ("pool.zarr" if part == POOL_SPLIT else f"{part}/{task}.zarr")


def train_pool_model(cfg: In2CoreConfig, warmup: WarmupConfig, data: DataConfig, model_dir: str | Path) -> dict:
    """``model: pool``: LoRA on every pool row for ``train_epochs`` epochs (warmup's other settings), a checkpoint
    per epoch under ``data/in2core/model``; ``model: warmup``: nothing to train (a previous run is removed)."""
    if cfg.model != "pool":
        if POOL_MODEL.exists():
            shutil.rmtree(POOL_MODEL)
        return {"model": "warmup"}
    # inside the persisted data/in2core, yet link-safe: run_warmup deletes POOL_MODEL first and writes each
    # checkpoint into a temporary directory that it renames, so no file of a DVC-linked previous run is reopened
    return run_warmup(dataclasses.replace(warmup, fraction=1.0, epochs=cfg.train_epochs), data, model_dir,
                      POOL_MODEL)


def in2core_checkpoint(cfg: In2CoreConfig, features: FeaturesConfig, default_base: str | Path) -> tuple[Path, str]:
    """The checkpoint whose gradients In2Core uses (``in2core.checkpoint``, else the last of its run) and its base."""
    run = POOL_MODEL if cfg.model == "pool" else Path(features.warmup_dir)
    chosen = dataclasses.replace(features, checkpoints=(cfg.checkpoint,) if cfg.checkpoint else (),
                                 base_model="" if cfg.model == "pool" else features.base_model)
    checkpoints, base = checkpoints_for(chosen, run, default_base)
    return checkpoints[-1], base


def in2core_jobs(cfg: In2CoreConfig, features: FeaturesConfig, sketch: SketchConfig, data: DataConfig,
                 default_base: str | Path) -> list[FeatureJob]:
    """The stage's stores: SGD gradients of the pool, and of each target task's validation and test rows, at
    :func:`in2core_checkpoint`; prunes stores of other checkpoints or tasks."""
    checkpoint, _ = in2core_checkpoint(cfg, features, default_base)
    run = checkpoint.parent
    chosen = dataclasses.replace(features, checkpoints=(checkpoint.name,),
                                 base_model="" if cfg.model == "pool" else features.base_model)
    layers = "" if cfg.layers == "all" else layers_text(cfg.layers)  # reduced layers: only theirs are extracted
    (pool,) = plan_jobs(chosen, sketch, data, POOL_SPLIT, run, default_base)
    jobs = [dataclasses.replace(pool, kind="sgd", layers=layers,
                                store=str(in2core_store_path(checkpoint.name, POOL_SPLIT)))]
    for job in plan_jobs(chosen, sketch, data, "targets", run, default_base):
        for part in ("val", "test"):
            jobs.append(dataclasses.replace(job, kind="sgd", target_rows=part, layers=layers,
                                            store=str(in2core_store_path(checkpoint.name, part, job.task))))
    remove_stale_stores(GRADS, jobs)
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    # data/in2core persists (its stores grow in place): replace the file, never write through a DVC cache link
    atomic_write_text(MANIFEST, json.dumps({"model": cfg.model, "checkpoint": checkpoint.name}, indent=2))
    return jobs


def raw_chunks(store: GradientStore, columns: np.ndarray | None = None) -> Callable[[], Iterator[torch.Tensor]]:
    """A re-iterable stream of the store's raw rows (unit rows × norms) as float64 ``[c, d]`` (or only
    ``columns``), one chunk at a time."""
    index = None if columns is None else torch.from_numpy(columns)

    def chunks() -> Iterator[torch.Tensor]:
        for _, features, norms, _ids in store.iter_chunks():
            g = torch.from_numpy(features.astype(np.float64) * norms[:, None].astype(np.float64))
            yield g if index is None else g[:, index]
    return chunks


def open_stores(cfg: In2CoreConfig, data: DataConfig, part: str) -> tuple[str, GradientStore, dict[str, GradientStore]]:
    """(checkpoint name, the pool store, {task: its ``part`` store}) as the in2core_grads stage wrote them,
    pairing checked."""
    if not MANIFEST.is_file():
        raise InflowError(f"{MANIFEST} is missing: run the in2core_grads stage first (dvc repro in2core_grads)")
    checkpoint = json.loads(MANIFEST.read_text())["checkpoint"]
    pool = GradientStore.open(in2core_store_path(checkpoint, POOL_SPLIT))
    tasks = {}
    for source in target_sources(data.targets, data.targets_format):
        store = GradientStore.open(in2core_store_path(checkpoint, part, source.name))
        require_pairing(pool.attrs, store.attrs, pool.path, store.path)
        tasks[source.name] = store
    return checkpoint, pool, tasks


def influence(pool: GradientStore, targets: torch.Tensor, blocks: Blocks, kept: list[int],
              damping: float) -> np.ndarray:
    """DataInf influence ``[n, m]`` of every pool row on each target gradient (rows of ``targets`` ``[m, d]``),
    summed over the ``kept`` blocks only: only those columns are read into the computation."""
    columns = blocks.columns(kept)
    chunks = raw_chunks(pool, columns)
    fit = fit_datainf(chunks, targets[:, torch.from_numpy(columns)], blocks.subset(kept), damping)
    return torch.cat([fit.influence(g) for g in chunks()]).numpy()


def _agreement(full: np.ndarray, reduced: np.ndarray, k: int) -> tuple[float, float]:
    """(Spearman correlation, share of the k most helpful rows in common) of two influence columns."""
    from scipy.stats import spearmanr  # scipy is imported slowly: only here

    top = lambda x: set(np.argsort(x, kind="stable")[:k].tolist())  # noqa: E731 (most negative = most helpful)
    return float(spearmanr(full, reduced).statistic), len(top(full) & top(reduced)) / k


def subtask_targets(val: dict[str, GradientStore],
                    data: DataConfig) -> tuple[torch.Tensor, list[tuple[str, str, float]]]:
    """The mean validation gradient of every (task, subtask), ``[S, d]`` float64, and for each row its task,
    subtask and share of the task's validation rows (a task's mean gradient is the share-weighted sum)."""
    subtasks = {t.name: dict(zip(t.val["example_id"].to_list(), t.val["subtask"].to_list()))
                for t in load_targets(data)}
    means, owners = [], []
    for name, store in val.items():
        grads = torch.from_numpy(store.read_all(raw=True).astype(np.float64))  # [m_t, d]
        labels = np.array([subtasks[name][i] for i in store.example_ids()])
        for sub in sorted(set(labels.tolist())):
            rows = torch.from_numpy(np.flatnonzero(labels == sub))
            means.append(grads[rows].mean(0))
            owners.append((name, sub, len(rows) / len(labels)))
    return torch.stack(means), owners


def run_in2core(cfg: In2CoreConfig, data: DataConfig, selector: str, out_dir: str | Path | None = None) -> dict:
    """The In2Core coreset of every target task; writes ``data/selections/in2core`` (selection files, ``scores.parquet``
    with the signed influence per task and per subtask, ``in2core.json``) and returns the manifest.

    Influence is computed on each validation subtask's mean gradient; a task's influence is their share-weighted
    sum (DataInf is linear in the target gradient). ``in2core.rule``: ``top_k`` keeps the rows most helpful to the
    task's mean (the paper); ``round_robin`` lets each subtask in turn take its most helpful row left, so one
    subtask's large gradients cannot crowd out the others (as LESS's default does)."""
    out_dir = Path(out_dir or selection_dir("in2core"))
    checkpoint, pool_store, val = open_stores(cfg, data, "val")
    blocks = Blocks.from_sketch(pool_store.attrs.sketch)  # the kept layers' blocks: the stores hold no others
    targets, owners = subtask_targets(val, data)
    ids = pool_store.example_ids()
    cols = {name: [j for j, (t, _, _) in enumerate(owners) if t == name] for name in val}
    share = torch.tensor([w for _, _, w in owners], dtype=torch.float64).numpy()

    def per_task(values: np.ndarray) -> np.ndarray:  # [n, S] subtask influences -> [n, tasks]
        return np.stack([values[:, c] @ share[c] for c in cols.values()], axis=1)

    # with every layer stored, each reduction of in2core.compare is a subset of its columns: ranked against all
    timed = {}
    for spec in ["all", *(cfg.compare if cfg.layers == "all" else [])]:
        started = time.perf_counter()
        blocks_of = kept_blocks(spec, len(blocks))
        values = influence(pool_store, targets, blocks, blocks_of, cfg.damping)  # [n, S]
        timed[spec] = (values, time.perf_counter() - started, blocks_of)
    by_subtask = timed["all"][0]
    scores = per_task(by_subtask)  # [n, tasks]: influence on each task's mean validation gradient

    pool = load_pool(data.pool)
    k = selection_size(len(pool), SelectConfig(fraction=cfg.fraction, count=cfg.count))
    tables = {name: (top_k(ids, -scores[:, j], k) if cfg.rule == "top_k" else round_robin(ids, -by_subtask[:, c], k))
              for j, (name, c) in enumerate(cols.items())}  # score: support −I, larger is more helpful
    write_selection(tables, pool, out_dir, "in2core", selector)
    columns = {f"influence_{name}": scores[:, j] for j, name in enumerate(val)}
    columns.update({f"influence_{t}__{sub}": by_subtask[:, j] for j, (t, sub, _) in enumerate(owners)})
    pl.DataFrame({"example_id": ids, **columns}).write_parquet(out_dir / "scores.parquet")
    full, full_s, _ = timed["all"]
    reduced = {}
    for spec, (values, seconds, blocks_of) in timed.items():
        mine = per_task(values)
        pairs = {name: _agreement(scores[:, j], mine[:, j], k) for j, name in enumerate(val)}
        reduced[spec] = {"blocks": blocks_of, "dims": int(sum(blocks.widths[b] for b in blocks_of)),
                         "seconds": round(seconds, 3), "time_saved": round(1 - seconds / full_s, 3),
                         "spearman": {n: round(p[0], 4) for n, p in pairs.items()},
                         "topk_overlap": {n: round(p[1], 4) for n, p in pairs.items()}}
    manifest = {"k": k, "pool": len(ids), "checkpoint": checkpoint, "model": cfg.model,
                "layers": layers_text(cfg.layers), "rule": cfg.rule, "stored_blocks": len(blocks), "dims": blocks.dim,
                "damping": cfg.damping,
                "targets": list(val), "subtasks": {name: [owners[j][1] for j in c] for name, c in cols.items()},
                "proponents": {name: int((scores[:, j] < 0).sum()) for j, name in enumerate(val)},
                "reduced": reduced}
    (out_dir / "in2core.json").write_text(json.dumps(manifest, indent=2))
    return manifest
