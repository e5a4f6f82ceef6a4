"""Multi-seed aggregation: mean ± sample std per (target, method), LESS wins over random, params overrides."""

from __future__ import annotations

import pytest

from inflow.config import params_to_dict, tiny_params
from inflow.config import params_from_dict
from inflow.report.seeds import aggregate_summaries, apply_overrides, format_markdown, seed_overrides


def _summary(less: float, random: float) -> dict:
    return {"rows": [{"target": "qa", "method": "less", "test_loss": less, "exact_match": 0.5, "selection_size": 10},
                     {"target": "qa", "method": "random", "test_loss": random, "exact_match": 0.25,
                      "selection_size": 10}]}


def test_mean_std_and_wins() -> None:
    rows = aggregate_summaries([_summary(1.0, 2.0), _summary(3.0, 2.5), _summary(2.0, 3.0)])
    less = next(r for r in rows if r["method"] == "less")
    assert less["n_seeds"] == 3
    assert less["test_loss_mean"] == pytest.approx(2.0)
    assert less["test_loss_std"] == pytest.approx(1.0)  # sample std of 1, 3, 2
    assert less["beats_random"] == 2
    assert "beats_random" not in next(r for r in rows if r["method"] == "random")
    table = format_markdown(rows, 3)
    assert "2.0000 ± 1.0000" in table and "2/3" in table


def test_in2core_is_judged_against_random_at_its_own_budget() -> None:
    def summary(in2core: float, random_5: float, random_50: float) -> dict:
        return {"rows": [{"target": "qa", "method": m, "test_loss": loss} for m, loss in
                         (("in2core", in2core), ("random", random_5), ("random_in2core", random_50))]}

    rows = aggregate_summaries([summary(2.0, 3.0, 1.5), summary(2.0, 1.0, 2.5)])
    assert next(r for r in rows if r["method"] == "in2core")["beats_random"] == 1  # only where random 50% is worse
    assert "beats_random" not in next(r for r in rows if r["method"] == "random_in2core")


def test_single_seed_has_zero_std() -> None:
    (less, _random) = aggregate_summaries([_summary(1.0, 2.0)])
    assert less["test_loss_std"] == 0.0


def test_overrides_give_valid_params_and_reject_unknown_keys() -> None:
    params = params_to_dict(tiny_params())
    changed = apply_overrides(params, seed_overrides(2))
    assert changed["benchmark"]["seed"] == 2 and changed["target"]["seed"] == 5
    assert params["benchmark"]["seed"] == tiny_params().benchmark.seed  # the input is not modified
    assert params_from_dict(changed).warmup.seed == 2
    with pytest.raises(KeyError, match="benchmark.sed"):
        apply_overrides(params, {"benchmark.sed": 1})
