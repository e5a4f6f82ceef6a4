"""Influence Distillation's steps on the tiny project, run where a stage runs them (the project root): embeddings,
landmarks, their Adam-preconditioned features against a by-hand computation, first-order selection against top-k
by exact influence, and the propagated scores where only some rows are landmarks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inflow import paths
from inflow.config import DistillConfig, Params, SelectConfig
from inflow.data.batching import collate
from inflow.gradients.per_example import per_example_grads
from inflow.methods.distill.adam import adam_preconditioner
from inflow.pipeline.distill import (
    LANDMARKS_FILE,
    landmark_job,
    landmark_stores,
    run_distill,
    write_landmarks,
)
from inflow.pipeline.distill_second import write_drift
from inflow.pipeline.embed import plan_embed_jobs
from inflow.pipeline.features import extract_store, plan_jobs
from inflow.pipeline.stores import _context
from inflow.selection import read_selection, top_k
from inflow.store import GradientStore

BASE = paths.base_model_dir("selector")
SELECT = SelectConfig(count=6)


def _run(params: Params, distill: DistillConfig) -> dict:
    """The embed, landmarks and distill stages' work, plus the target features they pair with."""
    for job in plan_embed_jobs(distill, params.features, params.sketch, params.data, "pool", BASE):
        extract_store(job, progress=False)
    write_landmarks(distill, paths.embed_store_path("pool"), LANDMARKS_FILE)
    features, second = landmark_stores(distill, params.features, params.sketch, params.data, paths.WARMUP, BASE)
    for job in features + second:
        extract_store(job, progress=False)
    for job in second:
        write_drift(job)
    for job in plan_jobs(params.features, params.sketch, params.data, "targets", paths.WARMUP, BASE):
        extract_store(job, progress=False)
    return run_distill(distill, SELECT, params.features, params.data, paths.WARMUP, BASE, "selector")


@pytest.fixture
def project(tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tiny_project.copy(tmp_path / "project")
    monkeypatch.chdir(copy.root)
    return copy


def _target_grads(params: Params, checkpoint: str) -> dict[str, np.ndarray]:
    tasks = sorted(p.name for p in (paths.GRADS / "targets").iterdir())
    return {t: GradientStore.open(paths.store_path("targets", checkpoint, t)).read_all(raw=True) for t in tasks}


@pytest.mark.slow
def test_every_row_a_landmark_selects_top_k_by_exact_influence(project) -> None:
    distill = dataclasses.replace(project.params.distill, landmarks=10_000, optimizer="adam", rule="top_k",
                                  normalize=False)
    manifest = _run(project.params, distill)
    assert manifest["landmarks"] == manifest["pool"] == 50
    job = landmark_job(distill, project.params.features, project.params.sketch, project.params.data, paths.WARMUP,
                       BASE)
    store = GradientStore.open(job.store)
    assert store.attrs.feature_kind == "precond" and store.attrs.extraction["adam"]["step"] > 0

    # by hand: per-example gradients of every pool row, times Adam's a, through the same sketch
    ctx = _context(job)
    a = adam_preconditioner(ctx.adam.exp_avg_sq.float(), ctx.adam.step, ctx.adam.beta1, ctx.adam.beta2,
                            ctx.adam.eps)
    ids = store.example_ids()
    rows = [ctx.rows[ctx.index[i]] for i in ids]
    grads = torch.cat([per_example_grads(ctx.model, collate(rows[i:i + 5], ctx.pad_id))[0]
                       for i in range(0, len(rows), 5)])
    by_hand = ctx.sketch.project(grads.float() * a).numpy()
    np.testing.assert_allclose(store.read_all(raw=True), by_hand, rtol=2e-3, atol=2e-3 * np.abs(by_hand).max())

    selection = read_selection(paths.selection_dir("distill"))
    for task, target in _target_grads(project.params, Path(job.checkpoint).name).items():
        exact = (by_hand.astype(np.float64) @ target.T.astype(np.float64)).mean(axis=1)
        expected = top_k(ids, exact, SELECT.count)["example_id"].to_list()
        chosen = selection.filter(pl.col("target") == task).sort("rank")["example_id"].to_list()
        assert chosen == expected, task
    assert (paths.selection_dir("distill") / "distill.json").exists()


@pytest.mark.slow
def test_few_landmarks_keep_exact_values_and_propagate_the_rest(project) -> None:
    distill = dataclasses.replace(project.params.distill, landmarks=20, landmark_rule="kmeans++", optimizer="sgd",
                                  rule="round_robin")
    manifest = _run(project.params, distill)
    assert manifest["landmarks"] == 20 and manifest["optimizer"] == "sgd" and manifest["sigma"] > 0
    assert set(manifest["holdout_spearman"]) == set(manifest["targets"])
    marks = json.loads(LANDMARKS_FILE.read_text())
    assert len(marks) == 20
    job = landmark_job(distill, project.params.features, project.params.sketch, project.params.data, paths.WARMUP,
                       BASE)
    store = GradientStore.open(job.store)
    assert store.attrs.feature_kind == "sgd" and store.example_ids() == marks
    scores = pl.read_parquet(paths.selection_dir("distill") / "scores.parquet")
    assert scores.height == 50 and scores["landmark"].sum() == 20
    assert distill.normalize  # the default: cosines of landmark and target gradients
    phi = store.read_all(raw=True).astype(np.float64)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    for task, target in _target_grads(project.params, Path(job.checkpoint).name).items():
        target = target.astype(np.float64) / np.linalg.norm(target, axis=1, keepdims=True)
        exact = (phi @ target.T).mean(axis=1)
        at_marks = scores.filter(pl.col("landmark"))[f"score_{task}"].to_numpy()
        np.testing.assert_allclose(at_marks, exact, rtol=1e-6, atol=1e-9)
        propagated = scores.filter(~pl.col("landmark"))[f"score_{task}"].to_numpy()
        assert np.isfinite(propagated).all() and np.ptp(propagated) > 0  # not a constant fill
    selection = read_selection(paths.selection_dir("distill"))
    assert selection.group_by("target").len()["len"].to_list() == [SELECT.count] * len(manifest["targets"])


def _hvp_by_hand(job, task: str, rows: list[str]) -> np.ndarray:
    """P H_t (a ⊙ g_j) for the landmark rows, from the landmark job's own model and state."""
    from inflow.methods.distill import target_hvp
    from inflow.pipeline.distill_second import hvp_jobs

    (hvp_job,) = hvp_jobs(job, [task])
    ctx = _context(hvp_job)
    a = adam_preconditioner(ctx.adam.exp_avg_sq.float(), ctx.adam.step, ctx.adam.beta1, ctx.adam.beta2,
                            ctx.adam.eps)
    batch = collate([ctx.rows[ctx.index[i]] for i in rows], ctx.pad_id)
    grads = per_example_grads(ctx.model, batch)[0].float() * a
    return ctx.sketch.project(target_hvp(ctx.model, ctx.hvp_batches, grads)).numpy()


@pytest.mark.slow
def test_second_order_weights_solve_the_qp_and_reduce_to_first_order_without_curvature(project) -> None:
    params = project.params
    distill = dataclasses.replace(params.distill, landmarks=16, order="second", optimizer="adam", rule="top_k",
                                  normalize=False)
    manifest = _run(params, distill)
    assert manifest["order"] == "second" and set(manifest["second_order"]) == set(manifest["targets"])
    # the Hessian products switch SDPA to its math backend with process-wide flags: restored, never left switched
    # (concurrent batches could interleave the switch; such stores extract one batch at a time)
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    for report in manifest["second_order"].values():
        assert report["status"] in ("Solved", "AlmostSolved") and report["support"] >= 1 and report["eta"] > 0
    scores = pl.read_parquet(paths.selection_dir("distill") / "scores.parquet")
    selection = read_selection(paths.selection_dir("distill"))
    for task in manifest["targets"]:
        weights = scores[f"weight_{task}"].to_numpy()
        assert weights.min() >= 0 and abs(weights.sum() - 50) < 1e-6 * 50
        chosen = selection.filter(pl.col("target") == task).sort("rank")["example_id"].to_list()
        best = scores.sort([f"weight_{task}", f"score_{task}"], descending=True)["example_id"].head(SELECT.count)
        assert chosen == best.to_list()

    # the stored Hessian products are P H_t (a ⊙ g) of the landmark rows, in store order
    job = landmark_job(distill, params.features, params.sketch, params.data, paths.WARMUP, BASE)
    task = manifest["targets"][0]
    from inflow.pipeline.distill_second import hvp_store_path

    store = GradientStore.open(hvp_store_path(task, Path(job.checkpoint).name))
    ids = store.example_ids()
    assert ids == json.loads(LANDMARKS_FILE.read_text())
    by_hand = _hvp_by_hand(job, task, ids[:4])
    np.testing.assert_allclose(store.read_all(raw=True)[:4], by_hand, rtol=1e-3, atol=1e-3 * np.abs(by_hand).max())

    # a negligible step size leaves no curvature: the weights rank rows as first-order influence does
    flat = run_distill(dataclasses.replace(distill, eta=1e-12), SELECT, params.features, params.data, paths.WARMUP,
                       BASE, "selector")
    run_distill(dataclasses.replace(distill, order="first"), SELECT, params.features, params.data,
                        paths.WARMUP, BASE, "selector", out_dir="first")
    assert flat["order"] == "second"
    for task in manifest["targets"]:
        got = read_selection(paths.selection_dir("distill")).filter(pl.col("target") == task)["example_id"]
        want = read_selection("first").filter(pl.col("target") == task)["example_id"]
        assert got.to_list() == want.to_list(), task
