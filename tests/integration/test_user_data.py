"""A user's own pool, target tasks and warmup checkpoints under `dvc repro`: DVC sees them through params.

The user's files live outside data/benchmark (target rows without ids, as a user writes them), the models are
the user's own (build: false) and the warmup checkpoints come from another run (features.warmup_dir), as with
LESS's own checkpoints. Then: the built-in pool and targets are not generated; appending rows to the pool reruns
the features stage, which extracts only the chunk the new rows land in, and the selection; editing one target
task's validation rows re-extracts only that task's store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from inflow.config import DataConfig, ModelConfig, params_to_dict, tiny_params
from inflow.data.benchmark import generate_benchmark
from inflow.pipeline.models import build_base_model
from inflow.pipeline.prepare import build_tokenizer, read_corpus
from inflow.pipeline.train import run_warmup
from tests.integration.dvcrepo import dvc, make_repo, ran, write_params


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _user_data(bench: Path, user: Path, pool_rows: int) -> None:
    """The benchmark's rows as a user would bring them: pool rows (first ``pool_rows``), no metadata columns;
    target rows without ids."""
    pool = [{k: r[k] for k in ("id", "messages")} for r in _jsonl(bench / "pool.jsonl")[:pool_rows]]
    _write_jsonl(user / "pool.jsonl", pool)
    for task_dir in sorted((bench / "targets").iterdir()):
        for split in ("val", "test"):
            rows = [{k: v for k, v in r.items() if k != "id"} for r in _jsonl(task_dir / f"{split}.jsonl")]
            _write_jsonl(user / "targets" / task_dir.name / f"{split}.jsonl", rows)


def _chunks_to_extract(output: str) -> dict[str, int]:
    """Store path -> pending chunks, from the features flow's log lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(data/grads/\S+\.zarr): (\d+) chunks to extract",
                                                             output)}


@pytest.mark.slow
@pytest.mark.integration
def test_user_pool_targets_and_checkpoints_drive_dvc_repro(tmp_path: Path) -> None:
    params = params_to_dict(tiny_params())
    repo = make_repo(tmp_path / "repo", params)
    bench, user = tmp_path / "bench", repo / "user"
    generate_benchmark(tiny_params().benchmark, bench)
    _user_data(bench, user, pool_rows=200)

    # the user's own selector model and a warmup run made elsewhere (as LESS's scripts would)
    ext = tmp_path / "ext"
    data = DataConfig(pool=str(user / "pool.jsonl"), targets=str(user / "targets"),
                      corpus=str(bench / "corpus.jsonl"), max_seq_len=params["data"]["max_seq_len"])
    build_tokenizer(tiny_params().tokenizer, data, ext / "tokenizer")
    model = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pretrain_epochs=0)
    build_base_model(model, ext / "tokenizer", read_corpus(data.corpus)[:10], ext / "selector", data.max_seq_len)
    run_warmup(tiny_params().warmup, data, ext / "selector", ext / "warmup")
    (ext / "warmup" / "warmup.json").unlink()  # an external run: the base model comes from adapter_config.json

    params["data"].update(pool="user/pool.jsonl", targets="user/targets")
    for role in ("selector", "target"):
        params[role].update(build=False, path=str(ext / "selector"))
    params["features"].update(warmup_dir=str(ext / "warmup"), base_model=str(ext / "selector"), chunk_rows=64)
    write_params(repo, params)

    first = dvc(repo, "repro", "less")
    assert {"features@pool", "features@targets", "less"} <= ran(first) and "warmup" not in ran(first)
    assert not (repo / "data/benchmark/pool.jsonl").exists() and not (repo / "data/benchmark/targets").exists()
    assert (repo / "data/benchmark/corpus.jsonl").exists()  # data.corpus still names the built-in corpus
    stores = _chunks_to_extract(first)
    pool_stores = [s for s in stores if "/pool/" in s]
    assert pool_stores and all(stores[s] == 4 for s in pool_stores)  # 200 rows in chunks of 64
    before = pl.read_parquet(repo / "data/selections/less/selection.parquet")

    # the pool grows by 10 rows: only the partial last chunk (rows 192..209) is extracted again
    pool = _jsonl(user / "pool.jsonl")
    extra = [{**row, "id": f"new-{i}"} for i, row in enumerate(_jsonl(bench / "pool.jsonl")[200:210])]
    _write_jsonl(user / "pool.jsonl", pool + extra)
    second = dvc(repo, "repro", "less")
    assert {"features@pool", "less"} <= ran(second)
    grown = _chunks_to_extract(second)
    assert all(grown[s] == 1 for s in pool_stores), grown
    assert all(n == 0 for s, n in grown.items() if "/targets/" in s), grown
    after = pl.read_parquet(repo / "data/selections/less/selection.parquet")
    assert after.height >= before.height  # the budget is a fraction of the grown pool

    # one target task's validation rows change: only its stores are extracted again
    task = sorted(p.name for p in (user / "targets").iterdir())[0]
    rows = _jsonl(user / "targets" / task / "val.jsonl")
    rows[0]["answer"] = rows[0]["answer"] + " Indeed."
    _write_jsonl(user / "targets" / task / "val.jsonl", rows)
    third = dvc(repo, "repro", "less")
    assert {"features@targets", "less"} <= ran(third)
    edited = _chunks_to_extract(third)
    assert all(n >= 1 for s, n in edited.items() if f"/targets/{task}/" in s)
    assert all(n == 0 for s, n in edited.items() if f"/targets/{task}/" not in s), edited
    assert "up to date" in dvc(repo, "status", "less")
