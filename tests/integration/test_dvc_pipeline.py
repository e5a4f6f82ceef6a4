"""The whole DAG with `dvc repro` on tiny params in a fresh temporary repository, then LESS-T reuse (changing only
the target model reruns no selection stage), then a stale-store check: a warmup rerun with another learning rate
writes checkpoints of the same names, and `dvc repro` must rebuild the persisted gradient stores from them (their
content hashes change) and select anew."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from inflow.config import params_to_dict, tiny_params
from inflow.store import GradientStore
from tests.integration.dvcrepo import dvc, make_repo, ran, write_params

SELECTION_STAGES = {"prepare", "tokenizer", "base@selector", "warmup", "features@pool", "features@targets",
                    "less", "baselines", "embed@pool", "embed@targets", "landmarks", "distill", "in2core_grads",
                    "in2core", "bm25", "rds"}


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_then_target_change_reuses_selections(tmp_path) -> None:
    params = params_to_dict(tiny_params())
    repo = make_repo(tmp_path / "repo", params)

    first = ran(dvc(repo, "repro"))
    assert SELECTION_STAGES <= first and "coverage" in first
    summary = json.loads((repo / "reports/summary.json").read_text())
    methods = {"less", "distill", "in2core", "bm25", "rds", "random", "random_in2core", "full"}
    assert {r["method"] for r in summary["rows"]} == methods
    assert len(summary["rows"]) == 3 * len(methods)  # 3 target tasks x every method
    coverage = json.loads((repo / "reports/coverage/coverage.json").read_text())
    assert {r["target"] for r in summary["rows"]} == set(coverage["tasks"])

    params["target"]["hidden_size"] = 48  # a different target model
    write_params(repo, params)
    second = ran(dvc(repo, "repro"))
    assert {"base@target", "finetune@less", "finetune@in2core", "coverage", "report"} <= second
    assert not (second & SELECTION_STAGES), f"selection stages reran: {second & SELECTION_STAGES}"

    # the warmup again with another learning rate: same checkpoint names, other weights and moments
    stores = sorted((repo / "data/grads/pool").glob("*.zarr"))
    before = {p.name: (GradientStore.open(p).attrs, GradientStore.open(p).read_all()) for p in stores}
    scores = pl.read_parquet(repo / "data/selections/less/scores.parquet")
    params["warmup"]["lr"] = params["warmup"]["lr"] * 5
    write_params(repo, params)
    third = ran(dvc(repo, "repro"))
    assert {"warmup", "features@pool", "features@targets", "less", "landmarks", "distill", "in2core_grads",
            "in2core"} <= third  # tiny params: In2Core's gradients come from the warmup checkpoint
    assert not {"embed@pool", "embed@targets"} & third  # embeddings come from the base model, not the warmup
    assert sorted(p.name for p in (repo / "data/grads/pool").glob("*.zarr")) == sorted(before)
    for name, (attrs, features) in before.items():
        after = GradientStore.open(repo / "data/grads/pool" / name)
        assert after.attrs.adapter_hash != attrs.adapter_hash and after.attrs.optimizer_hash != attrs.optimizer_hash
        assert np.mean(np.sum(after.read_all() * features, axis=1)) < 0.999  # recomputed, not reused
    new_scores = pl.read_parquet(repo / "data/selections/less/scores.parquet")
    assert not np.allclose(new_scores.drop("example_id").to_numpy(), scores.drop("example_id").to_numpy())
