"""The targeted baselines on the tiny project: a pool row that copies a validation row is BM25's and RDS's first
pick for that row's subtask; RDS's batched, padded representations equal one unpadded forward per row; the
selection files and manifests are LESS's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inflow import paths
from inflow.config import BaselinesConfig, SelectConfig
from inflow.data.pool import load_pool, write_pool_jsonl
from inflow.data.render import encode_chat
from inflow.data.targets import load_targets
from inflow.models.loading import load_causal_lm
from inflow.models.tokenizer import load_tokenizer
from inflow.pipeline.baselines import run_bm25, run_rds
from inflow.selection import read_selection

BASE = Path(paths.base_model_dir("selector"))


@pytest.fixture
def project(tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tiny_project.copy(tmp_path / "project")
    monkeypatch.chdir(copy.root)
    return copy


def _with_copy_of_val_row(project) -> tuple[object, str, str, str]:
    """The project's data config with one validation row of the first task appended to the pool as a
    conversation: (data, copy's id, task, subtask)."""
    data = project.params.data
    task = load_targets(data)[0]
    row = task.val.row(0, named=True)
    messages = [*row["prompt_messages"], {"role": "assistant", "content": row["answer"]}]
    if len(row["prompt_messages"]) > 1:  # a response prefix: fold it into the answer turn
        messages = [row["prompt_messages"][0], {"role": "assistant",
                                                "content": row["prompt_messages"][1]["content"] + row["answer"]}]
    pool = load_pool(data.pool)
    copy = pool.head(1).with_columns(pl.lit("copy-of-val").alias("example_id"),
                                     pl.Series("messages", [messages], dtype=pool["messages"].dtype))
    write_pool_jsonl(pl.concat([pool, copy]), Path(data.pool))
    return data, "copy-of-val", task.name, row["subtask"]


@pytest.mark.slow
def test_bm25_picks_the_copy_first(project) -> None:
    data, copy_id, task, subtask = _with_copy_of_val_row(project)
    select = SelectConfig(count=5, subtask_rule="max")
    manifest = run_bm25(select, BaselinesConfig(), data)
    out = paths.selection_dir("bm25")
    chosen = read_selection(out).filter(pl.col("target") == task).sort("rank")
    assert chosen["example_id"][0] == copy_id and chosen.height == 5
    scores = pl.read_parquet(out / "scores.parquet")
    column = scores[f"score_{task}/{subtask}"].to_numpy()
    assert scores["example_id"][int(np.argmax(column))] == copy_id
    np.testing.assert_array_equal(scores[f"score_{task}"].to_numpy(),
                                  scores.select(pl.col(f"^score_{task}/.*$")).to_numpy().max(axis=1))
    assert manifest["k"] == 5 and manifest["subtask_rule"] == "max" and manifest["seconds"] >= 0
    assert json.loads((out / "bm25.json").read_text())["targets"] == [t.name for t in load_targets(data)]
    assert (out / f"{task}.jsonl").is_file()


@pytest.mark.slow
def test_rds_picks_the_copy_and_batching_does_not_change_representations(project) -> None:
    data, copy_id, task, subtask = _with_copy_of_val_row(project)
    cfg = BaselinesConfig(rds_pooling="mean", rds_batch_size=7)
    manifest = run_rds(SelectConfig(count=4), cfg, data, BASE)
    out = paths.selection_dir("rds")
    scores = pl.read_parquet(out / "scores.parquet")
    column = scores[f"score_{task}/{subtask}"].to_numpy()
    assert scores["example_id"][int(np.argmax(column))] == copy_id
    chosen = read_selection(out).filter(pl.col("target") == task).sort("rank")
    assert copy_id in chosen["example_id"].to_list() and chosen.height == 4
    assert manifest["pooling"] == "mean" and manifest["subtask_rule"] == "round_robin"

    # one pool row by hand: its own unpadded forward, mean of the final hidden states, cosine with the validation
    # rows of the subtask (each by its own forward too), in float64
    tokenizer, model = load_tokenizer(BASE), load_causal_lm(BASE).eval()
    targets = {t.name: t for t in load_targets(data)}[task]

    def rep(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        return hidden.double().mean(0).numpy()

    from inflow.data.render import encode_prompt_answer
    val = [encode_prompt_answer(r["prompt_messages"], r["answer"], tokenizer, data.max_seq_len)
           for r in targets.val.iter_rows(named=True) if r["subtask"] == subtask]
    pool = load_pool(data.pool)
    i = 3
    encoded = encode_chat(pool["messages"][i].to_list(), tokenizer, data.max_seq_len,
                          label_newline=data.label_newline)
    x = rep(list(encoded.input_ids))
    cos = [x @ v / np.linalg.norm(x) / np.linalg.norm(v) for v in (rep(list(e.input_ids)) for e in val)]
    row = scores.filter(pl.col("example_id") == pool["example_id"][i])
    assert row[f"score_{task}/{subtask}"][0] == pytest.approx(float(np.mean(cos)), abs=1e-5)

    last = run_rds(SelectConfig(count=4), dataclasses.replace(cfg, rds_pooling="last"), data, BASE,
                   out_dir=Path("last"))
    assert last["pooling"] == "last"
    assert not np.allclose(pl.read_parquet("last/scores.parquet")[f"score_{task}"].to_numpy(),
                           scores[f"score_{task}"].to_numpy())
