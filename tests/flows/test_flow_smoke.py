"""One real Prefect flow run (the session's temporary local server, `prefect_api`) of the first two stages."""

from __future__ import annotations

import json

import pytest
import yaml

from inflow.config import params_to_dict, tiny_params


@pytest.mark.slow
def test_prepare_and_tokenizer_flows_run(tmp_path, monkeypatch, prefect_api) -> None:
    from flows.prepare import prepare
    from flows.tokenizer import tokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_to_dict(tiny_params())))
    manifest = prepare(params_path="params.yaml")
    tok = tokenizer(params_path="params.yaml")
    assert (tmp_path / "data/benchmark/pool.jsonl").exists()
    assert json.loads((tmp_path / "data/benchmark/manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert tok["vocab_size"] <= tiny_params().tokenizer.vocab_size + 16
    assert (tmp_path / "models/tokenizer/tokenizer.json").exists()
