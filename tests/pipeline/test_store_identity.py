"""A store is identified by what went in: a warmup rerun with another learning rate writes checkpoints of the same
names, and the features stage must notice (rebuild under the stage, refuse by hand), so the selection changes.
Scoring refuses pool and target stores that were not built alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inflow import paths
from inflow.config import DataConfig, SelectConfig, WarmupConfig
from inflow.errors import StoreMismatchError
from inflow.pipeline.features import extract_store, extraction_settings, open_store, plan_jobs
from inflow.pipeline.select import run_less
from inflow.pipeline.train import run_warmup
from inflow.selection.outputs import read_selection
from inflow.store import GradientStore
from inflow.store.attrs import FEATURE_FORMAT
from inflow.store.identity import checkpoint_digests


def _data(project) -> DataConfig:
    return DataConfig(pool=str(project.pool), targets=str(project.root / project.params.data.targets),
                      max_seq_len=project.params.data.max_seq_len)


def _extract_all(project, rebuild: bool) -> None:
    """The features stage's work for both splits, as the flow does it (open with ``rebuild``, fill the chunks)."""
    p = project.params
    for split in ("pool", "targets"):
        for job in plan_jobs(p.features, p.sketch, _data(project), split, paths.WARMUP,
                             paths.base_model_dir("selector")):
            open_store(job, rebuild=rebuild)
            extract_store(job, progress=False)


def _less(project, out: str) -> tuple[list[str], np.ndarray]:
    p = project.params
    run_less(SelectConfig(count=5, subtask_rule="max"), p.features, _data(project), paths.WARMUP,
             paths.base_model_dir("selector"), "selector", out)
    scores = pl.read_parquet(Path(out) / "scores.parquet")
    selected = read_selection(out).sort("target", "rank")["example_id"].to_list()
    return selected, scores.select(pl.col("^score_[^/]*$")).to_numpy()


def test_warmup_rerun_with_other_lr_rebuilds_features_and_changes_the_selection(tiny_project, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    project = tiny_project.copy(tmp_path / "project")
    monkeypatch.chdir(project.root)
    _extract_all(project, rebuild=True)
    store = paths.store_path("pool", "checkpoint-3")
    before = GradientStore.open(store)
    assert before.attrs.feature_format == FEATURE_FORMAT and before.attrs.optimizer_hash
    assert before.attrs.extraction["adam"]["eps_inside_sqrt"] is True
    old_features = before.read_all()
    old_selection, old_scores = _less(project, "sel_old")

    # the same warmup, another learning rate: the same checkpoint names, other adapter weights and moments
    warmup = dataclasses.replace(project.params.warmup, lr=project.params.warmup.lr * 5)
    assert isinstance(warmup, WarmupConfig)
    run_warmup(warmup, _data(project), paths.base_model_dir("selector"), paths.WARMUP)
    assert (paths.WARMUP / "checkpoint-3").is_dir()
    job = plan_jobs(project.params.features, project.params.sketch, _data(project), "pool", paths.WARMUP,
                    paths.base_model_dir("selector"))[0]
    with pytest.raises(StoreMismatchError, match="adapter_hash") as info:  # by hand: refused, with the fix
        open_store(job)
    assert "optimizer_hash" in str(info.value) and "Rerun the features stage" in str(info.value)

    # scoring the stale pool store against rebuilt target stores is refused too
    for target_job in plan_jobs(project.params.features, project.params.sketch, _data(project), "targets",
                                paths.WARMUP, paths.base_model_dir("selector")):
        open_store(target_job, rebuild=True)
        extract_store(target_job, progress=False)
    with pytest.raises(StoreMismatchError, match="adapter_hash: .* in the pool store"):
        _less(project, "sel_mixed")

    _extract_all(project, rebuild=True)  # the stage: rebuilds every store from the new checkpoints
    after = GradientStore.open(store)
    adapter, optimizer = checkpoint_digests(paths.WARMUP / "checkpoint-3", optimizer=True)
    assert (after.attrs.adapter_hash, after.attrs.optimizer_hash) == (adapter, optimizer)
    assert after.attrs.adapter_hash != before.attrs.adapter_hash
    cosines = np.sum(after.read_all() * old_features, axis=1)
    assert np.mean(cosines) < 0.99  # the features really were recomputed
    new_selection, new_scores = _less(project, "sel_new")
    assert not np.allclose(new_scores, old_scores)
    assert new_selection != old_selection


def test_extraction_settings_are_part_of_the_identity(tiny_project, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    job = tiny_project.job(store, split="targets")
    extract_store(job, progress=False)
    attrs = GradientStore.open(store).attrs
    assert attrs.extraction == {"batching": "bucket-v1", "device": "cpu"}
    # a GPU records its token budget and sketch groups (cuBLAS picks kernels by shape), its causal-only attention,
    # and, under bfloat16 autocast, the dense sketch's TF32 products; autocast on any device, the shared input casts
    cuda = torch.device("cuda")  # only the type is read
    gpu = extraction_settings(job, cuda, None, 4096, 2246, "float32")
    assert gpu == {"batching": "bucket-v1", "device": "cuda", "batch_tokens": 4096, "sketch_group_mib": 2246,
                   "padding_mask": False}
    assert job.sketch_kind == "rademacher"
    shared = {"autocast_inputs": "shared"}
    assert extraction_settings(job, cuda, None, 4096, 2246, "bfloat16") == gpu | shared | {"sketch_products": "tf32"}
    sparse = dataclasses.replace(job, sketch_kind="sparse_jl")
    assert extraction_settings(sparse, cuda, None, 4096, 2246, "bfloat16") == gpu | shared  # no dense products
    assert extraction_settings(job, torch.device("cpu"), None, 4096, 256, "float32") == attrs.extraction
    assert extraction_settings(job, torch.device("cpu"), None, 4096, 256, "bfloat16") == attrs.extraction | shared
    hessian = dataclasses.replace(job, hvp_task="arithmetic")  # the Hessian products run the model in float32
    assert extraction_settings(hessian, torch.device("cpu"), None, 4096, 256, "bfloat16") == attrs.extraction
    # compiled layers round otherwise, and their token budget is recorded on a CPU too; not under Hessian products
    compiled = dataclasses.replace(job, compile=True)
    assert extraction_settings(compiled, torch.device("cpu"), None, 4096, 256, "float32") == attrs.extraction | {
        "compiled": True, "batch_tokens": 4096}
    assert extraction_settings(compiled, cuda, None, 4096, 2246, "float32") == gpu | {"compiled": True}
    # compiled layers share their 16-bit casts within the graph, not through the hooks
    assert extraction_settings(compiled, cuda, None, 4096, 2246, "bfloat16") == gpu | {
        "compiled": True, "sketch_products": "tf32"}
    assert extraction_settings(dataclasses.replace(compiled, hvp_task="arithmetic"), torch.device("cpu"), None, 4096,
                               256, "float32") == attrs.extraction
    assert attrs.precision == "float32"  # precision auto on a CPU
    assert attrs.optimizer_hash == "" and attrs.adapter_hash  # SGD features never read the optimizer
    # the CPU thread count, token budget and sketch group size do not change the bytes (test_batching_identity), so
    # a store resumes under others; the precision does
    assert open_store(tiny_project.job(store, split="targets", batch_tokens=64, threads=3, sketch_group_mib=1)) == []
    with pytest.raises(StoreMismatchError, match="compiled"):  # eager bytes are not mixed with compiled ones
        open_store(tiny_project.job(store, split="targets", compile=True))
    with pytest.raises(StoreMismatchError, match='precision: "float32" in the store, "bfloat16" asked for now'):
        open_store(tiny_project.job(store, split="targets", precision="bfloat16"))
    rebuilt = open_store(tiny_project.job(store, split="targets", precision="bfloat16"), rebuild=True)
    assert rebuilt == list(range(attrs.n_chunks))
    assert GradientStore.open(store).attrs.precision == "bfloat16"
