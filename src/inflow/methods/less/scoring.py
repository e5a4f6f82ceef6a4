"""LESS scores, streamed over the training store one chunk at a time.

For checkpoint i with unit-normalised training features T_i [n_train, d] and validation features V_i
[n_val, d], LESS's influence matrix is S = sum_i w_i T_i V_i^T (cosine similarities), and the score of
training example z for one target task is

    score(z) = max_k  mean_{j in subtask k} S[z, j].

Because the mean over a subtask's rows is linear, mean_j S[z, j] = sum_i w_i <T_i[z], mean_{j in k} V_i[j]>:
we precompute the per-subtask mean validation vector of every checkpoint (K x d, tiny) and never form the
n_train x n_val matrix. Subtasks may have any number of rows. ``less_scores(..., per_subtask=True)`` keeps the
K columns (for selection rules that look at each subtask, ``inflow.selection.round_robin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from inflow.store import GradientStore
from inflow.store.prefetch import prefetch_chunks


def checkpoint_weights(mean_lrs: Sequence[float]) -> np.ndarray:
    """w_i = mean learning rate of epoch i, normalised to sum 1: [n_checkpoints] float64."""
    lrs = np.asarray(mean_lrs, dtype=np.float64)
    if lrs.ndim != 1 or len(lrs) == 0 or np.any(lrs < 0) or lrs.sum() <= 0:
        raise ValueError(f"checkpoint learning rates must be non-negative with a positive sum, got {lrs.tolist()}")
    return lrs / lrs.sum()


def subtask_means(val_features: np.ndarray, subtasks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean unit feature per subtask: (sorted subtask names, [K, d] float32).

    ``val_features`` [n_val, d] are unit rows; row j belongs to ``subtasks[j]``.
    """
    if len(subtasks) != len(val_features):
        raise ValueError(f"{len(subtasks)} subtask labels for {len(val_features)} validation rows")
    labels = np.asarray(subtasks)
    names = sorted(set(subtasks))
    means = np.stack([val_features[labels == name].astype(np.float64).mean(axis=0) for name in names])
    return names, means.astype(np.float32)


def less_scores(
    train_stores: Sequence[GradientStore],
    val_means: Mapping[str, Sequence[np.ndarray]],
    weights: np.ndarray,
    device: str | torch.device = "cpu",
    progress: bool = True,
    verify: bool = True,
    prefetch: int = 2,
    readers: int = 2,
    per_subtask: bool = False,
) -> dict[str, np.ndarray]:
    """LESS scores of every training row for every target, in one streamed pass over the stores.

    Returns {target: [n_train] float32}, the max over subtasks, taken chunk by chunk (memory holds [n_train] per
    target, never [n_train, K]: K may be large, one subtask per target row). With ``per_subtask`` it returns
    {target: [n_train, K_target] float32} instead, column k the checkpoint-weighted mean cosine with subtask k's
    validation rows (in the order of ``val_means``), for selection rules that look at each subtask.

    ``train_stores[i]`` is checkpoint i's training store (same rows, same order, in every checkpoint);
    ``val_means[target][i]`` is that target's [K_target, d] per-subtask mean features at checkpoint i;
    ``weights`` [n_checkpoints] the checkpoint weights. Reads one chunk of every checkpoint store at a time;
    ``verify=False`` skips the per-chunk checksums (about a tenth of the time of a large scoring run).
    ``readers`` background threads read (decode, checksum) up to ``prefetch`` chunks ahead (``prefetch=0``: read
    in this thread), so reading overlaps the matmul and, with 2 readers, verified reads run as fast as unverified
    ones on a 2-core machine; memory is ``prefetch + 1`` chunks per checkpoint plus the result.
    """
    n_ckpt = len(train_stores)
    if len(weights) != n_ckpt or any(len(m) != n_ckpt for m in val_means.values()):
        raise ValueError("train stores, validation means and weights must cover the same checkpoints")
    first = train_stores[0]
    for store in train_stores[1:]:
        if store.n_chunks != first.n_chunks or store.attrs.n_rows != first.attrs.n_rows:
            raise ValueError(f"{store.path} and {first.path} hold different rows; rebuild the features stage")
    targets = list(val_means)
    sizes = [len(val_means[t][0]) for t in targets]
    # one [d, sum K] matrix per checkpoint, all targets side by side
    queries = [torch.from_numpy(np.concatenate([val_means[t][i] for t in targets]).T.copy()).to(device)
               for i in range(n_ckpt)]
    n = first.attrs.n_rows
    out = {t: np.empty((n, k) if per_subtask else n, dtype=np.float32) for t, k in zip(targets, sizes)}
    ids_ref: list[str] | None = None
    chunks = prefetch_chunks(train_stores, range(first.n_chunks), verify=verify, depth=prefetch, readers=readers)
    for c, per_store in tqdm(chunks, total=first.n_chunks, desc="less scores", unit="chunk", disable=not progress,
                             leave=False):
        acc = None
        for i, (store, (feats, _norms, ids)) in enumerate(zip(train_stores, per_store)):
            if ids_ref is None or i == 0:
                ids_ref = ids
            elif ids != ids_ref:
                raise ValueError(f"{store.path}: chunk {c} lists other example ids than {first.path}")
            part = float(weights[i]) * (torch.from_numpy(feats).to(device) @ queries[i])
            acc = part if acc is None else acc + part
        start, stop = first.chunk_bounds(c)
        col = 0
        for target, k in zip(targets, sizes):
            block = acc[:, col:col + k]
            out[target][start:stop] = (block if per_subtask else block.max(dim=1).values).cpu().numpy()
            col += k
    return out
