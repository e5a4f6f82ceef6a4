"""The whole pipeline on a Llama-2-style model: SentencePiece-style tokenizer with byte fallback and the "▁" prefix,
BOS, and no pad token (trained here, saved and loaded like a real checkpoint's). Warmup, features of both splits,
LESS selection, fine-tuning on the selection and evaluation all run through the same code as the demo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from inflow.config import (
    DataConfig,
    EvaluateConfig,
    FeaturesConfig,
    FinetuneConfig,
    ModelConfig,
    SelectConfig,
    SketchConfig,
    WarmupConfig,
)
from inflow.data.pool import load_pool, pool_texts
from inflow.models.factory import build_tiny_model, save_model
from inflow.models.tokenizer import load_tokenizer
from inflow.pipeline.evaluate import run_evaluate
from inflow.pipeline.features import extract_store, plan_jobs
from inflow.pipeline.select import run_less
from inflow.pipeline.train import run_finetune, run_warmup
from inflow.store import GradientStore
from tests.models.spm import train_llama2_tokenizer


def test_llama2_style_model_without_pad_token_runs_the_pipeline(tiny_project, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # stages write under the working directory
    pool = load_pool(tiny_project.pool)
    tokenizer = train_llama2_tokenizer(pool_texts(pool, eos="</s>"), vocab_size=400)
    model = build_tiny_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
                             tokenizer, max_positions=256)
    base = save_model(model, tokenizer, tmp_path / "llama2-tiny")
    loaded = load_tokenizer(base)
    assert loaded.pad_token is None and loaded.bos_token_id is not None
    assert loaded.convert_ids_to_tokens(loaded("Hi there", add_special_tokens=False)["input_ids"])[0].startswith("▁")

    data = DataConfig(pool=str(tiny_project.pool), targets=str(tiny_project.root / tiny_project.params.data.targets),
                      max_seq_len=256)
    run_warmup(WarmupConfig(epochs=1, fraction=0.2, batch_size=4), data, base, tmp_path / "warmup")
    features = FeaturesConfig(batch_size=3, chunk_rows=16, warmup_dir=str(tmp_path / "warmup"))
    for split in ("pool", "targets"):
        for job in plan_jobs(features, SketchConfig(dim=64), data, split, features.warmup_dir, base):
            extract_store(job, progress=False)
            store = GradientStore.open(job.store)
            assert store.is_complete() and np.isfinite(store.read_all()).all()

    manifest = run_less(SelectConfig(count=6), features, data, features.warmup_dir, base, "llama2-tiny",
                        tmp_path / "selections")
    task = manifest["targets"][0]
    selection = tmp_path / "selections" / f"{task}.jsonl"
    assert load_pool(selection).height == 6

    tuned = run_finetune(FinetuneConfig(epochs=1, batch_size=4), data, base, selection, tmp_path / "tuned" / task)
    assert math.isfinite(tuned["last_loss"])
    metrics = run_evaluate(EvaluateConfig(batch_size=8, max_new_tokens=0), data, base, tmp_path / "tuned" / task)
    assert set(metrics) == {task}
    assert math.isfinite(metrics[task]["loss"]) and 0.0 <= metrics[task]["exact_match"] <= 1.0
    assert pl.read_parquet(tmp_path / "selections" / "scores.parquet").height == pool.height
