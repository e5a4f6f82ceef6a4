"""LESS scores against a few lines of numpy, with unequal subtask sizes and several checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from inflow.methods.less import checkpoint_weights, less_scores, subtask_means
from inflow.store import GradientStore, StoreAttrs


def _attrs(n_rows: int, dim: int, chunk_rows: int, checkpoint: str) -> StoreAttrs:
    return StoreAttrs(model_id="m", model_hash="h", checkpoint=checkpoint, checkpoint_step=1,
                      lora_targets=("q_proj",), feature_kind="adam", sketch={"kind": "none"}, dim=dim,
                      dtype="float32", n_rows=n_rows, chunk_rows=chunk_rows, data_hash="d", code_version="0")


def _store(tmp_path, name: str, feats: np.ndarray, chunk_rows: int) -> GradientStore:
    store = GradientStore.create_or_open(tmp_path / f"{name}.zarr", _attrs(len(feats), feats.shape[1], chunk_rows,
                                                                              name))
    for c in range(store.n_chunks):
        start, stop = store.chunk_bounds(c)
        store.write_chunk(c, feats[start:stop], [f"ex{i}" for i in range(start, stop)])
    return store


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("chunk_rows", "prefetch", "readers"), [(7, 0, 1), (7, 2, 1), (7, 3, 2), (64, 2, 2)])
def test_less_scores_match_numpy(tmp_path, chunk_rows: int, prefetch: int, readers: int) -> None:
    rng = np.random.default_rng(0)
    n_train, n_val, d, n_ckpt = 50, 9, 16, 3
    subtasks = ["a", "a", "a", "a", "b", "b", "c", "c", "c"]  # unequal sizes: 4, 2, 3
    lrs = [2e-3, 1.5e-3, 5e-4]
    train = [rng.normal(size=(n_train, d)) for _ in range(n_ckpt)]
    val = [rng.normal(size=(n_val, d)) for _ in range(n_ckpt)]
    stores = [_store(tmp_path, f"train{i}", train[i], chunk_rows) for i in range(n_ckpt)]
    weights = checkpoint_weights(lrs)
    means = [subtask_means(_unit(v).astype(np.float32), subtasks)[1] for v in val]

    got = less_scores(stores, {"task": means}, weights, progress=False, prefetch=prefetch, readers=readers)["task"]
    columns = less_scores(stores, {"task": means}, weights, progress=False, prefetch=prefetch, readers=readers,
                          per_subtask=True)["task"]

    # reference: S = sum_i w_i T_i V_i^T on unit rows; mean over each subtask's columns; max over subtasks
    w = np.array(lrs) / sum(lrs)
    S = sum(w[i] * _unit(train[i]) @ _unit(val[i]).T for i in range(n_ckpt))
    labels = np.array(subtasks)
    per_subtask = np.stack([S[:, labels == k].mean(axis=1) for k in ("a", "b", "c")], axis=1)
    np.testing.assert_allclose(got, per_subtask.max(axis=1), rtol=1e-5, atol=1e-6)
    assert columns.shape == (n_train, 3)  # subtasks a, b, c in subtask_means' (sorted) order
    np.testing.assert_allclose(columns, per_subtask, rtol=1e-5, atol=1e-6)


def test_several_targets_are_scored_independently(tmp_path) -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(20, 8))
    store = _store(tmp_path, "t", train, 6)
    m1 = rng.normal(size=(2, 8)).astype(np.float32)
    m2 = rng.normal(size=(3, 8)).astype(np.float32)
    both = less_scores([store], {"x": [m1], "y": [m2]}, np.ones(1), progress=False)
    alone = less_scores([store], {"y": [m2]}, np.ones(1), progress=False)
    np.testing.assert_allclose(both["y"], alone["y"], rtol=1e-6)
    np.testing.assert_allclose(both["x"], (_unit(train) @ m1.T).max(axis=1), rtol=1e-5, atol=1e-6)


def test_checkpoint_weights_normalise_and_reject_bad_input() -> None:
    np.testing.assert_allclose(checkpoint_weights([1.0, 3.0]), [0.25, 0.75])
    with pytest.raises(ValueError):
        checkpoint_weights([0.0, 0.0])
    with pytest.raises(ValueError):
        checkpoint_weights([])


def test_subtask_means_label_count_mismatch() -> None:
    with pytest.raises(ValueError, match="subtask labels"):
        subtask_means(np.zeros((3, 2), dtype=np.float32), ["a", "b"])
