"""The ``less`` selection step: score the pool against each target task's subtasks, pick k rows by
``select.subtask_rule`` (the baselines: :mod:`inflow.pipeline.baselines`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import polars as pl

from inflow.config import DataConfig, FeaturesConfig, SelectConfig
from inflow.data.pool import load_pool
from inflow.data.targets import load_targets
from inflow.devices import resolve_device
from inflow.methods.less import checkpoint_weights, less_scores, subtask_means
from inflow.paths import POOL_SPLIT, selection_dir, store_path
from inflow.pipeline.feature_jobs import checkpoints_for
from inflow.selection import select_by_rule, selection_size, write_selection
from inflow.store import GradientStore
from inflow.store.attrs import require_pairing
from inflow.training.checkpoint import checkpoint_mean_lr

log = logging.getLogger(__name__)


def _val_means(task, checkpoint: str, pool: GradientStore) -> tuple[list[str], np.ndarray]:
    """(subtask names, [K, d] mean unit validation feature per subtask) of ``task`` at ``checkpoint``; the target
    store must pair with the ``pool`` store of the same checkpoint (same model, checkpoint content, sketch)."""
    store = GradientStore.open(store_path("targets", checkpoint, task.name))
    require_pairing(pool.attrs, store.attrs, pool.path, store.path)
    subtask_of = dict(zip(task.val["example_id"].to_list(), task.val["subtask"].to_list()))
    return subtask_means(store.read_all(), [subtask_of[i] for i in store.example_ids()])


def run_less(select: SelectConfig, features: FeaturesConfig, data: DataConfig, warmup_dir: str | Path,
             default_base: str | Path, selector: str, out_dir: str | Path | None = None) -> dict:
    """LESS selection for every target task; writes ``data/selections/less`` and returns a manifest."""
    out_dir = Path(out_dir or selection_dir("less"))
    checkpoints, _base = checkpoints_for(features, warmup_dir, default_base)
    weights = checkpoint_weights([checkpoint_mean_lr(c) for c in checkpoints])
    train = [GradientStore.open(store_path(POOL_SPLIT, c.name)) for c in checkpoints]
    tasks = load_targets(data)
    per_checkpoint = {t.name: [_val_means(t, c.name, pool) for c, pool in zip(checkpoints, train)] for t in tasks}
    subtask_names = {t: found[0][0] for t, found in per_checkpoint.items()}  # sorted names, same at every checkpoint
    means = {t: [m for _, m in found] for t, found in per_checkpoint.items()}
    device = resolve_device(select.device, "select.device")
    per_subtask = less_scores(train, means, weights, device=device, per_subtask=True)
    scores = {t: s.max(axis=1) for t, s in per_subtask.items()}  # LESS's score: the max over subtasks
    ids = train[0].example_ids()
    pool = load_pool(data.pool)
    k = selection_size(len(pool), select)
    tables = {name: select_by_rule(ids, s, k, select.subtask_rule) for name, s in per_subtask.items()}
    write_selection(tables, pool, out_dir, "less", selector)
    columns = {f"score_{t}": s for t, s in scores.items()}
    for t, task_scores in per_subtask.items():
        columns.update({f"score_{t}/{name}": task_scores[:, j] for j, name in enumerate(subtask_names[t])})
    pl.DataFrame({"example_id": ids, **columns}).write_parquet(out_dir / "scores.parquet")
    manifest = {"k": k, "checkpoints": [c.name for c in checkpoints], "weights": weights.tolist(),
                "targets": list(scores), "subtask_rule": select.subtask_rule, "subtasks": subtask_names}
    (out_dir / "less.json").write_text(json.dumps(manifest, indent=2))
    return manifest
