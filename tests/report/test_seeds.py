"""Seed overrides of the params (the aggregation over seeds: tests/report/test_document.py)."""

from __future__ import annotations

import pytest

from inflow.config import params_from_dict, params_to_dict, tiny_params
from inflow.report.seeds import apply_overrides, seed_overrides


def test_overrides_give_valid_params_and_reject_unknown_keys() -> None:
    params = params_to_dict(tiny_params())
    changed = apply_overrides(params, seed_overrides(2))
    assert changed["benchmark"]["seed"] == 2 and changed["target"]["seed"] == 5
    assert params["benchmark"]["seed"] == tiny_params().benchmark.seed  # the input is not modified
    assert params_from_dict(changed).warmup.seed == 2
    with pytest.raises(KeyError, match="benchmark.sed"):
        apply_overrides(params, {"benchmark.sed": 1})
