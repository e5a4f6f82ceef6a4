"""Our LESS scores equal LESS's, computed the way LESS's code computes them, with the sketch off.

The reference is written from LESS's scripts, in float64, one example at a time: open-instruct's encoding of
every pool row (multi-turn, system messages) and LESS's ``query + completion`` encoding of validation rows; the
model's own ``labels=`` loss; ``obtain_gradients_with_adam`` (m' = β₁m + (1−β₁)g, v' = β₂v + (1−β₂)g²,
Γ = m'/√(v'+ε), no bias correction) from the checkpoint's AdamW state; rows L2-normalised; scores
``Σ_i w_i T_i V_iᵀ`` with w_i the checkpoints' mean learning rates normalised to sum 1; then the mean over each
subtask's validation rows and the max over subtasks. Ours goes through the features step (stores written
unprojected because the sketch is wider than the gradient) and ``less_scores``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from inflow import paths
from inflow.config import DataConfig
from inflow.data.pool import load_pool
from inflow.data.targets import load_target_tasks
from inflow.methods.less import checkpoint_weights, less_scores, subtask_means
from inflow.models.loading import load_causal_lm
from inflow.models.tokenizer import load_tokenizer
from inflow.pipeline.features import extract_store
from inflow.pipeline.train import run_warmup
from inflow.store import GradientStore
from inflow.training.checkpoint import (
    checkpoint_mean_lr,
    find_checkpoints,
    load_adapter_into,
)
from tests.data.open_instruct import ROWS, less_prompt_answer, open_instruct_chat


def _pool_with_turns(project, path: Path) -> Path:
    """Six benchmark rows, each also as a multi-turn conversation with a system message (one longer than
    max_seq_len: truncated alike), plus open-instruct's reference rows."""
    rows = load_pool(project.pool).head(6).to_dicts()
    out = []
    for i, row in enumerate(rows):
        out.append({"id": f"plain-{i}", "messages": row["messages"]})
        other = rows[(i + 1) % len(rows)]["messages"]
        out.append({"id": f"turns-{i}", "messages": [{"role": "system", "content": "Be brief."}, *row["messages"],
                                                     *other]})
    out += [{"id": f"ref-{i}", "messages": messages} for i, messages in enumerate(ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def _grad(model, ids: list[int], labels: list[int], max_len: int) -> torch.Tensor:
    """LESS's per-example gradient: the model's own loss on one unpadded row truncated to ``max_len`` tokens (as
    open-instruct truncates to max_seq_length), LoRA parameters in model order."""
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=torch.tensor([ids[:max_len]]), labels=torch.tensor([labels[:max_len]])).loss
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for _, p in model.named_parameters() if p.requires_grad])


def _reference_scores(checkpoints, base: Path, pool: list[dict], val: list[dict],
                      max_len: int) -> dict[str, np.ndarray]:
    """{subtask: [n_pool] mean weighted cosine} the LESS way, in float64."""
    tokenizer = load_tokenizer(base)
    lrs = []
    for ckpt in checkpoints:
        log = json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
        epoch = json.loads((ckpt / "trainer_state.json").read_text())["epoch"]
        lrs.append(np.mean([e["learning_rate"] for e in log if epoch - 1 < e["epoch"] <= epoch + 1e-6]))
    weights = np.array(lrs) / np.sum(lrs)
    total: dict[str, np.ndarray] = {}
    for ckpt, weight in zip(checkpoints, weights):
        model = load_adapter_into(load_causal_lm(base), ckpt).double().eval()
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        slots = [state["state"][i] for i in sorted(state["state"])]
        group = state["param_groups"][0]
        (beta1, beta2), eps = group["betas"], group["eps"]
        m = torch.cat([s["exp_avg"].reshape(-1) for s in slots]).double()
        v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in slots]).double()
        train = []
        for row in pool:
            g = _grad(model, *open_instruct_chat(row["messages"], tokenizer), max_len)
            m1, v1 = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            train.append(m1 / torch.sqrt(v1 + eps))
        tr = torch.nn.functional.normalize(torch.stack(train), dim=1)
        va = torch.nn.functional.normalize(torch.stack(
            [_grad(model, *less_prompt_answer(r["prompt_messages"], r["answer"], tokenizer), max_len) for r in val]),
            dim=1)
        scores = (tr @ va.T).numpy() * weight
        for subtask in sorted({r["subtask"] for r in val}):
            cols = [j for j, r in enumerate(val) if r["subtask"] == subtask]
            total[subtask] = total.get(subtask, 0) + scores[:, cols].mean(axis=1)
    return total


def test_scores_equal_less_reference_without_sketch(tiny_project, tmp_path: Path) -> None:
    project = tiny_project.copy(tmp_path / "project")
    warmup = dataclasses.replace(project.params.warmup, epochs=2)  # two checkpoints, so their weights matter
    data = DataConfig(pool=str(project.pool), targets=str(project.root / project.params.data.targets),
                      max_seq_len=project.params.data.max_seq_len)
    base = project.root / paths.base_model_dir("selector")
    run_warmup(warmup, data, base, project.root / paths.WARMUP)
    checkpoints = find_checkpoints(project.root / paths.WARMUP)
    assert len(checkpoints) == 2
    pool_file = _pool_with_turns(project, tmp_path / "pool.jsonl")

    task = load_target_tasks(project.root / project.params.data.targets)[0]
    train_stores, means = [], []
    for ckpt in checkpoints:
        job = project.job(tmp_path / f"pool-{ckpt.name}.zarr", pool=pool_file, dtype="float32")
        job = dataclasses.replace(job, checkpoint=str(ckpt), sketch_dim=10**7)  # wider than the gradient: no sketch
        extract_store(job, progress=False)
        val_job = dataclasses.replace(project.job(tmp_path / f"val-{ckpt.name}.zarr", split="targets",
                                                  dtype="float32"), checkpoint=str(ckpt), sketch_dim=10**7)
        extract_store(val_job, progress=False)
        train_stores.append(GradientStore.open(job.store))
        val = GradientStore.open(val_job.store)
        assert not any(b["projected"] for b in val.attrs.sketch["blocks"] + train_stores[-1].attrs.sketch["blocks"])
        subtask_of = dict(zip(task.val["example_id"].to_list(), task.val["subtask"].to_list()))
        names, m = subtask_means(val.read_all(), [subtask_of[i] for i in val.example_ids()])
        means.append(m)
    weights = checkpoint_weights([checkpoint_mean_lr(c) for c in checkpoints])
    ours = less_scores(train_stores, {task.name: means}, weights, per_subtask=True, progress=False)[task.name]

    pool_rows = {r["example_id"]: r for r in load_pool(pool_file).to_dicts()}
    ids = train_stores[0].example_ids()
    reference = _reference_scores(checkpoints, base, [pool_rows[i] for i in ids], task.val.to_dicts(),
                                  data.max_seq_len)
    expected = np.stack([reference[name] for name in names], axis=1)
    assert ours.shape == expected.shape == (len(pool_rows), len(names))
    assert np.std(expected) > 1e-3  # the scores are not all alike: the comparison can fail
    np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-4)
    np.testing.assert_array_equal(np.argsort(-ours.max(axis=1), kind="stable")[:5],
                                  np.argsort(-expected.max(axis=1), kind="stable")[:5])
