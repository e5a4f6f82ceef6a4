"""The whole DAG with `dvc repro` on tiny params in a fresh temporary repository, then LESS-T reuse:
changing only the target model must rerun no selection stage."""

from __future__ import annotations

import json

import pytest

from inflow.config import params_to_dict, tiny_params
from tests.integration.dvcrepo import dvc, make_repo, ran, write_params

SELECTION_STAGES = {"prepare", "tokenizer", "base@selector", "warmup", "features@pool", "features@targets",
                    "less", "baselines"}


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_then_target_change_reuses_selections(tmp_path) -> None:
    params = params_to_dict(tiny_params())
    repo = make_repo(tmp_path / "repo", params)

    first = ran(dvc(repo, "repro"))
    assert SELECTION_STAGES <= first
    summary = json.loads((repo / "reports/summary.json").read_text())
    assert {r["method"] for r in summary["rows"]} == {"less", "random", "full"}
    assert len(summary["rows"]) == 3 * 3  # 3 target tasks x 3 methods

    params["target"]["hidden_size"] = 48  # a different target model
    write_params(repo, params)
    second = ran(dvc(repo, "repro"))
    assert "base@target" in second and "finetune@less" in second and "report" in second
    assert not (second & SELECTION_STAGES), f"selection stages reran: {second & SELECTION_STAGES}"
