"""Influence Distillation's ``landmarks`` and ``distill`` steps (DESIGN §6), on the stores every method shares.

* :func:`write_landmarks` draws the landmark rows from the pool's JVP embeddings (stage embed) and writes their ids;
  :func:`landmark_job` is the features job that extracts exact gradients for those rows only, at one warmup
  checkpoint: Adam-preconditioned ``a ⊙ g`` (``distill.optimizer: adam``) or plain ``g`` (``sgd``), through the
  same extraction code, sketch and store as LESS's features (so the target stores of the features stage pair
  with it, and it resumes, grows and is identity-checked like them).
* :func:`run_distill` computes each landmark's exact first-order influence on every target row,
  p_L = Φ_L G_Tᵀ (``[L, m]``; with ``distill.normalize``, the default, the cosines of those rows, as LESS scores:
  raw inner products favour short rows; the second order keeps the raw loss change), propagates it to every
  pool row by kernel ridge regression on the embeddings, keeps the exact values at the landmarks, and selects by
  ``distill.rule`` into the same selection files as every method.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from inflow.config import (
    DataConfig,
    DistillConfig,
    FeaturesConfig,
    SelectConfig,
    SketchConfig,
)
from inflow.data.pool import load_pool
from inflow.data.targets import load_targets, target_sources
from inflow.errors import InflowError
from inflow.files import atomic_write_text
from inflow.methods.distill import fit_kernel_ridge
from inflow.methods.distill.landmarks import choose_landmarks
from inflow.paths import (
    DISTILL,
    POOL_SPLIT,
    embed_store_path,
    selection_dir,
    store_path,
)
from inflow.pipeline.distill_second import (
    hvp_jobs,
    propagation_coefficients,
    second_order_task,
    step_size,
)
from inflow.pipeline.feature_jobs import FeatureJob, checkpoints_for, plan_jobs
from inflow.pipeline.stores import remove_stale_stores
from inflow.selection import round_robin, selection_size, top_k, write_selection
from inflow.store import GradientStore
from inflow.store.attrs import require_pairing

log = logging.getLogger(__name__)

LANDMARKS_FILE = DISTILL / "landmarks.json"  # the landmark rows' example ids, in pool order
HOLDOUT_SHARE = 0.2  # landmarks held out to measure how well propagation predicts exact influence


def landmark_store_path(checkpoint: str) -> Path:
    """``data/distill/grads/<checkpoint>.zarr``: the landmarks' exact gradient features."""
    return DISTILL / "grads" / f"{checkpoint}.zarr"


def landmark_checkpoint(distill: DistillConfig, features: FeaturesConfig, warmup_dir: str | Path,
                        default_base: str | Path) -> tuple[Path, str]:
    """The checkpoint whose weights and optimizer state give exact influence (``distill.checkpoint``, else the last
    of ``features.warmup_dir``) and its base model."""
    chosen = dataclasses.replace(features, checkpoints=(distill.checkpoint,) if distill.checkpoint else ())
    checkpoints, base = checkpoints_for(chosen, warmup_dir, default_base)
    return checkpoints[-1], base


def write_landmarks(distill: DistillConfig, embed_store: str | Path, out: str | Path) -> dict:
    """Draw the landmarks from the embedding store's raw rows and write their ids (JSON list) to ``out``."""
    store = GradientStore.open(embed_store)
    ids = store.example_ids()
    picked = choose_landmarks(store.read_all(raw=True), distill.landmarks, distill.landmark_rule, distill.seed)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # data/distill persists (its stores grow in place): replace the file, never write through a DVC cache link
    atomic_write_text(out, json.dumps([ids[i] for i in picked]))
    return {"landmarks": len(picked), "pool": len(ids), "rule": distill.landmark_rule}


def landmark_job(distill: DistillConfig, features: FeaturesConfig, sketch: SketchConfig, data: DataConfig,
                 warmup_dir: str | Path, default_base: str | Path, ids_file: str | Path = LANDMARKS_FILE) -> FeatureJob:
    """The features job of the landmark rows at :func:`landmark_checkpoint` (see the module docstring)."""
    checkpoint, _base = landmark_checkpoint(distill, features, warmup_dir, default_base)
    chosen = dataclasses.replace(features, checkpoints=(checkpoint.name,))
    (job,) = plan_jobs(chosen, sketch, data, POOL_SPLIT, warmup_dir, default_base)
    kind = "precond" if distill.optimizer == "adam" else "sgd"
    return dataclasses.replace(job, rows=str(ids_file), kind=kind, store=str(landmark_store_path(checkpoint.name)))


def ranked(ids: list[str], weights: np.ndarray, p: np.ndarray, k: int) -> pl.DataFrame:
    """The k rows of largest weight (ties, e.g. the zero weights, broken by larger p, then id): a selection table
    (example_id, score = weight, rank)."""
    order = np.lexsort((np.asarray(ids), -p, -weights))[:k]
    return pl.DataFrame({"example_id": [ids[i] for i in order], "score": weights[order].astype(np.float64),
                         "rank": np.arange(1, len(order) + 1)})


def landmark_stores(distill: DistillConfig, features: FeaturesConfig, sketch: SketchConfig, data: DataConfig,
                    warmup_dir: str | Path, default_base: str | Path) -> tuple[list[FeatureJob], list[FeatureJob]]:
    """The landmarks stage's stores: the landmark features job, and (second order) one Hessian-vector job per
    target task; prunes what the plan no longer produces (other checkpoints, tasks, or first order)."""
    job = landmark_job(distill, features, sketch, data, warmup_dir, default_base)
    second = []
    if distill.order == "second":
        second = hvp_jobs(job, [source.name for source in target_sources(data.targets, data.targets_format)])
    remove_stale_stores(DISTILL / "grads", [job])
    remove_stale_stores(DISTILL / "hvp", second)
    if not second and (DISTILL / "hvp").exists():
        shutil.rmtree(DISTILL / "hvp")
    return [job], second


def run_distill(distill: DistillConfig, select: SelectConfig, features: FeaturesConfig, data: DataConfig,
                warmup_dir: str | Path, default_base: str | Path, selector: str,
                out_dir: str | Path | None = None) -> dict:
    """Influence Distillation for every target task (``distill.order``: first-order influence, or second-order
    weights); writes ``data/selections/distill`` and returns its manifest (``distill.json``)."""
    out_dir = Path(out_dir or selection_dir("distill"))
    started = time.perf_counter()
    checkpoint, _base = landmark_checkpoint(distill, features, warmup_dir, default_base)
    embed = GradientStore.open(embed_store_path(POOL_SPLIT))
    marks = GradientStore.open(landmark_store_path(checkpoint.name))
    ids = embed.example_ids()
    position = {example_id: i for i, example_id in enumerate(ids)}
    stale = [i for i in marks.example_ids() if i not in position]
    if stale:
        raise InflowError(f"{len(stale)} landmark rows are not in the embedding store (first: {stale[:5]}): rerun "
                          "the embed and landmarks stages (dvc repro distill)")
    at = np.array([position[i] for i in marks.example_ids()], dtype=np.int64)
    landmark_embeddings = _rows_of(embed, at)  # [L, e]
    phi = marks.read_all(raw=True).astype(np.float64)  # [L, d] exact landmark features
    if distill.normalize:  # cosines: unit landmark rows here, unit target rows below
        phi = phi / np.maximum(np.linalg.norm(phi, axis=1, keepdims=True), 1e-30)

    tasks = load_targets(data)
    exact, columns, target_means = [], {}, {}
    for task in tasks:
        path = store_path("targets", checkpoint.name, task.name)
        if not Path(path).exists():
            raise InflowError(f"{path}: no target gradients at {checkpoint.name}; the features stage extracts the "
                              "checkpoints named by features.checkpoints, so include distill.checkpoint there")
        target = GradientStore.open(path)
        require_pairing(marks.attrs, target.attrs, marks.path, target.path)
        grads = target.read_all(raw=True).astype(np.float64)  # [m_t, d] plain gradients of the target rows
        target_means[task.name] = grads.mean(axis=0)
        if distill.normalize:
            grads = grads / np.maximum(np.linalg.norm(grads, axis=1, keepdims=True), 1e-30)
        start = sum(e.shape[1] for e in exact)
        columns[task.name] = range(start, start + len(grads))
        exact.append(phi @ grads.T)  # [L, m_t]: p_i = <a ⊙ g_i, g_t> (or <g_i, g_t>; cosines when normalize)
    p_landmarks = np.concatenate(exact, axis=1)  # [L, m]

    holdout = _holdout_check(landmark_embeddings, p_landmarks, distill, {t: list(c) for t, c in columns.items()})
    ridge = fit_kernel_ridge(landmark_embeddings, torch.from_numpy(p_landmarks), distill.damping, distill.kernel)
    # streamed: one store chunk of embeddings at a time, [chunk, L] kernel rows, never [n, L]
    scores = np.concatenate([ridge.predict(torch.from_numpy(f * norms[:, None])).numpy()
                             for _, f, norms, _ in embed.iter_chunks()])  # [n, m]
    scores[at] = p_landmarks  # exact where known

    pool = load_pool(data.pool)
    k = selection_size(len(pool), select)
    tables, frame, second = {}, {"example_id": ids}, {}
    for name, cols in columns.items():
        per_row = scores[:, list(cols)]  # [n, m_t]
        mean = per_row.mean(axis=1)  # influence on the task's mean target gradient
        frame[f"score_{name}"] = mean
        tables[name] = top_k(ids, mean, k) if distill.rule == "top_k" else round_robin(ids, per_row, k)
    if distill.order == "second":
        eta = step_size(distill, checkpoint)
        unit = fit_kernel_ridge(landmark_embeddings, torch.eye(len(at), dtype=torch.float64), distill.damping,
                                distill.kernel)
        chunks = (f * norms[:, None] for _, f, norms, _ in embed.iter_chunks())
        coefficients = propagation_coefficients(unit, chunks, at, len(ids))
        for name in columns:
            found = second_order_task(marks, phi, target_means[name], name, unit, coefficients, distill, eta)
            frame[f"score_{name}"], frame[f"weight_{name}"] = found["p"], found["weights"]
            tables[name] = ranked(ids, found["weights"], found["p"], k)
            second[name] = found["report"]
    write_selection(tables, pool, out_dir, "distill", selector)
    pl.DataFrame(frame).with_columns(pl.Series("landmark", np.isin(np.arange(len(ids)), at))).write_parquet(
        out_dir / "scores.parquet")
    manifest = {"k": k, "checkpoint": checkpoint.name, "landmarks": len(at), "pool": len(ids),
                "optimizer": distill.optimizer, "normalize": distill.normalize, "kernel": distill.kernel,
                "sigma": ridge.sigma, "damping": distill.damping, "rule": distill.rule, "targets": list(columns),
                "holdout_spearman": holdout, "order": distill.order, "second_order": second,
                "seconds": round(time.perf_counter() - started, 3)}
    (out_dir / "distill.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _rows_of(store: GradientStore, rows: np.ndarray) -> torch.Tensor:
    """Raw rows ``rows`` (indices, any order) of ``store`` as float64 ``[len(rows), dim]``, read chunk by chunk."""
    out = torch.empty(len(rows), store.attrs.dim, dtype=torch.float64)
    for start, features, norms, _ids in store.iter_chunks():
        inside = (rows >= start) & (rows < start + len(features))
        out[torch.from_numpy(np.flatnonzero(inside))] = torch.from_numpy(
            (features[rows[inside] - start] * norms[rows[inside] - start, None]).astype(np.float64))
    return out


def _holdout_check(landmarks: torch.Tensor, values: np.ndarray, distill: DistillConfig,
                   columns: dict[str, list[int]]) -> dict[str, float]:
    """Per task, the Spearman correlation between exact and propagated task-mean influence on a random
    ``HOLDOUT_SHARE`` of the landmarks, propagated from the others: how much to trust the propagated scores."""
    n = len(landmarks)
    held = np.random.default_rng(distill.seed).permutation(n)[: max(2, int(HOLDOUT_SHARE * n))]
    kept = np.setdiff1d(np.arange(n), held)
    if len(kept) < 2 or len(held) < 3:
        return {}
    ridge = fit_kernel_ridge(landmarks[kept], torch.from_numpy(values[kept]), distill.damping, distill.kernel)
    predicted = ridge.predict(landmarks[held]).numpy()
    from scipy.stats import spearmanr  # scipy is imported slowly: only here

    return {name: float(spearmanr(values[held][:, cols].mean(1), predicted[:, cols].mean(1)).statistic)
            for name, cols in columns.items()}
