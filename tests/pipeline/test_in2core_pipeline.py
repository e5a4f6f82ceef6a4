"""In2Core's steps on the tiny project, run where a stage runs them (the project root): its gradient stores, the
coreset against DataInf written out by hand from the checkpoint's raw per-layer gradients, the pool-trained model,
reduced layers, the random control at the coreset's budget, and the coverage report with its plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from inflow import paths
from inflow.config import (
    FinetuneConfig,
    In2CoreConfig,
    Params,
    SelectConfig,
    SketchConfig,
)
from inflow.data.batching import collate
from inflow.data.targets import load_targets
from inflow.gradients.blocks import lora_blocks
from inflow.gradients.per_example import per_example_grads
from inflow.pipeline.baselines import run_baselines
from inflow.pipeline.coverage import run_coverage
from inflow.pipeline.features import extract_store
from inflow.pipeline.in2core import (
    GRADS,
    POOL_MODEL,
    in2core_jobs,
    run_in2core,
    train_pool_model,
)
from inflow.pipeline.stores import _context, open_store
from inflow.pipeline.train import run_finetune
from inflow.selection import read_selection, round_robin
from inflow.store import GradientStore

BASE = paths.base_model_dir("selector")


@pytest.fixture
def project(tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tiny_project.copy(tmp_path / "project")
    monkeypatch.chdir(copy.root)
    return copy


def _grads(params: Params, cfg: In2CoreConfig) -> list:
    train_pool_model(cfg, params.warmup, params.data, BASE)
    jobs = in2core_jobs(cfg, params.features, params.sketch, params.data, BASE)
    for job in jobs:
        open_store(job, rebuild=True)  # as the stage does: a store of other settings is rebuilt
        extract_store(job, progress=False)
    return jobs


def _by_hand(job, ids: list[str]) -> np.ndarray:
    """Raw per-example LoRA gradients ``[len(ids), D]`` (float64) of the job's rows, from its own model."""
    ctx = _context(job)
    rows = [ctx.rows[ctx.index[i]] for i in ids]
    return torch.cat([per_example_grads(ctx.model, collate(rows[i:i + 5], ctx.pad_id))[0]
                      for i in range(0, len(rows), 5)]).double().numpy()


def _datainf(g: np.ndarray, v: np.ndarray, sizes: list[int]) -> np.ndarray:
    """I(z) = −Σ_l h_l · g_{l,z}, h_l = (1/(nλ_l)) Σ_i (v_l − c_i g_{l,i}), c_i = v_l·g_{l,i} / (λ_l + ‖g_{l,i}‖²),
    λ_l = 0.1 mean_i ‖g_{l,i}‖² / D_l: the formula, row by row, in float64."""
    out, start, n = np.zeros(len(g)), 0, len(g)
    for size in sizes:
        gl, vl = g[:, start:start + size], v[start:start + size]
        lam = 0.1 * np.mean([x @ x for x in gl]) / size
        h = sum(vl - (vl @ x) / (lam + x @ x) * x for x in gl) / (n * lam)
        out -= gl @ h
        start += size
    return out


@pytest.mark.slow
def test_coreset_is_datainf_on_the_checkpoints_raw_gradients(project) -> None:
    # a sketch wider than the LoRA gradient stores it unprojected, and float32 keeps it exact to rounding
    params = dataclasses.replace(project.params, sketch=SketchConfig(dim=1 << 15),
                                 features=dataclasses.replace(project.params.features, dtype="float32"))
    cfg = In2CoreConfig(model="warmup", count=12, compare=("first:1", "last:1"), rule="top_k")
    jobs = _grads(params, cfg)
    pool_job, tasks = jobs[0], load_targets(params.data)
    assert [Path(j.store).relative_to(GRADS).as_posix() for j in jobs] == [
        f"{Path(pool_job.checkpoint).name}/{p}" for p in
        ["pool.zarr", *[f"{part}/{t.name}.zarr" for t in tasks for part in ("val", "test")]]]
    for task, (val, test) in zip(tasks, zip(jobs[1::2], jobs[2::2])):
        assert GradientStore.open(val.store).example_ids() == task.val["example_id"].to_list()
        assert GradientStore.open(test.store).example_ids() == task.test["example_id"].to_list()
        assert GradientStore.open(test.store).attrs.feature_kind == "sgd"
    manifest = run_in2core(cfg, params.data, "selector")

    pool = GradientStore.open(pool_job.store)
    assert not any(b["projected"] for b in pool.attrs.sketch["blocks"])
    ids = pool.example_ids()
    sizes = [b.size for b in lora_blocks(_context(pool_job).model)]
    g = _by_hand(pool_job, ids)
    scores = pl.read_parquet(paths.selection_dir("in2core") / "scores.parquet")
    selection = read_selection(paths.selection_dir("in2core"))
    for task, val in zip(tasks, jobs[1::2]):
        v = _by_hand(val, task.val["example_id"].to_list()).mean(0)
        expected = _datainf(g, v, sizes)
        np.testing.assert_allclose(scores[f"influence_{task.name}"].to_numpy(), expected, rtol=2e-4,
                                   atol=2e-4 * np.abs(expected).max())
        chosen = selection.filter(pl.col("target") == task.name).sort("rank")["example_id"].to_list()
        assert chosen == [ids[i] for i in np.argsort(expected, kind="stable")[:12]], task.name  # most helpful first
        # all layers against themselves, and the two single-layer reductions against all
        assert manifest["reduced"]["all"]["spearman"][task.name] == pytest.approx(1.0)
        first = _datainf(g[:, :sizes[0]], v[:sizes[0]], sizes[:1])
        assert manifest["reduced"]["first:1"]["spearman"][task.name] == pytest.approx(
            float(pl.DataFrame({"a": first, "b": expected}).select(pl.corr("a", "b", method="spearman")).item()),
            abs=1e-3)
    assert manifest["k"] == 12 and manifest["stored_blocks"] == 2 and manifest["dims"] == sum(sizes)

    # round robin: each validation subtask in turn takes the row most helpful to its own mean gradient
    manifest = run_in2core(dataclasses.replace(cfg, rule="round_robin"), params.data, "selector")
    selection = read_selection(paths.selection_dir("in2core"))
    for task, val in zip(tasks, jobs[1::2]):
        grads = _by_hand(val, task.val["example_id"].to_list())
        labels = task.val["subtask"].to_numpy()
        assert manifest["subtasks"][task.name] == sorted(set(labels))
        per_subtask = np.stack([_datainf(g, grads[labels == sub].mean(0), sizes) for sub in sorted(set(labels))], 1)
        chosen = selection.filter(pl.col("target") == task.name).sort("rank")["example_id"].to_list()
        assert chosen == round_robin(ids, -per_subtask, 12)["example_id"].to_list(), task.name
    assert manifest["reduced"]["last:1"]["blocks"] == [1] and manifest["reduced"]["last:1"]["dims"] == sizes[1]

    # reduced layers extracted for real: only the last layer's LoRA weights get gradients, and the influence is
    # the formula on that layer's raw gradients alone
    last = dataclasses.replace(cfg, layers="last:1")
    jobs = _grads(params, last)
    store = GradientStore.open(jobs[0].store)
    assert [b["in_dim"] for b in store.attrs.sketch["blocks"]] == sizes[1:]
    assert store.attrs.extraction["layers"] == "last:1"
    np.testing.assert_allclose(store.read_all(raw=True), g[:, sizes[0]:], rtol=1e-4, atol=1e-4 * np.abs(g).max())
    manifest = run_in2core(last, params.data, "selector")
    assert manifest["stored_blocks"] == 1 and set(manifest["reduced"]) == {"all"}
    scores = pl.read_parquet(paths.selection_dir("in2core") / "scores.parquet")
    for task, val in zip(tasks, jobs[1::2]):
        v = GradientStore.open(val.store).read_all(raw=True).astype(np.float64).mean(0)
        expected = _datainf(g[:, sizes[0]:], v, sizes[1:])
        np.testing.assert_allclose(scores[f"influence_{task.name}"].to_numpy(), expected, rtol=2e-4,
                                   atol=2e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_pool_model_then_warmup_model(project) -> None:
    params = project.params
    cfg = In2CoreConfig(model="pool", train_epochs=1, fraction=0.5, layers="last:1")
    jobs = _grads(params, cfg)
    trained = json.loads((POOL_MODEL / paths.WARMUP_MANIFEST).read_text())
    assert trained["examples"] == 50  # every pool row
    assert Path(jobs[0].checkpoint).parent == POOL_MODEL
    manifest = run_in2core(cfg, params.data, "selector")
    assert manifest["k"] == 25 and manifest["model"] == "pool" and manifest["stored_blocks"] == 1
    assert set(manifest["reduced"]) == {"all"}  # the stores hold one layer: nothing to compare it with
    assert read_selection(paths.selection_dir("in2core")).group_by("target").len()["len"].to_list() == [25] * len(
        manifest["targets"])

    # back to the warmup model: the pool-trained run and its stores go, the warmup checkpoint's come
    warm = _grads(params, dataclasses.replace(cfg, model="warmup"))
    assert not POOL_MODEL.exists()
    assert Path(warm[0].checkpoint).parent == paths.WARMUP
    assert sorted(p.relative_to(GRADS) for p in GRADS.glob("**/*.zarr")) == sorted(
        Path(j.store).relative_to(GRADS) for j in warm)


@pytest.mark.slow
def test_coverage_report_and_random_control(project) -> None:
    params = project.params
    cfg = In2CoreConfig(model="warmup", fraction=0.5, coverage_top=3)
    _grads(params, cfg)
    run_in2core(cfg, params.data, "selector")
    baselines = run_baselines(params.select, params.data, SelectConfig(fraction=cfg.fraction))
    assert baselines["k_in2core"] == 25
    assert read_selection(paths.selection_dir("random_in2core")).height == 25

    finetuned = paths.FINETUNED / "in2core"
    for selection in sorted(paths.selection_dir("in2core").glob("*.jsonl")):  # the selector stands in as target
        run_finetune(FinetuneConfig(epochs=1, batch_size=8), params.data, BASE, selection,
                     finetuned / selection.stem)
    summary = run_coverage(cfg, params.evaluate, params.data, BASE, finetuned, paths.REPORTS / "coverage")
    table = pl.read_parquet(paths.REPORTS / "coverage" / "coverage.parquet")
    tasks = load_targets(params.data)
    assert table.height == sum(t.test.height for t in tasks)
    assert table["test_loss"].is_finite().all() and (table["test_loss"] > 0).all()
    assert (table["top"] <= table["total"] + 1e-9).all() and (table["count"] <= 50).all()
    assert (table["grad_norm"] > 0).all()
    assert set(summary["tasks"]) == {t.name for t in tasks}
    for name, task_summary in summary["tasks"].items():
        assert task_summary["test_rows"] == table.filter(pl.col("task") == name).height
    for png in ("coverage_hist.png", "coverage_vs_loss.png"):
        image = np.asarray(Image.open(paths.REPORTS / "coverage" / png).convert("L"))
        assert image.shape[0] > 100 and image.std() > 5, png  # decodes, and is not blank
