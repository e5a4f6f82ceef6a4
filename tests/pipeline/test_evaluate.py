"""The evaluate step: a LoRA adapter on its base model, scored on target test splits from load_targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inflow.config import (
    DataConfig,
    EvaluateConfig,
    LoraConfig,
    ModelConfig,
    params_from_dict,
)
from inflow.errors import ConfigError, InflowError
from inflow.models.factory import build_tiny_model, save_model
from inflow.models.loading import apply_lora
from inflow.models.tokenizer import load_tokenizer, train_tokenizer
from inflow.pipeline.evaluate import evaluation_device, run_evaluate, tasks_to_evaluate

ROWS = [{"subtask": "arith", "prompt": "What is two plus two?", "answer": " four"},
        {"subtask": "qa", "prompt": "Name the capital of France.", "answer": "Paris"}]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Targets (gsm with a test split that repeats a row, no_test without), a base model and an ``all`` adapter
    saved with a tokenizer that has no pad token (as Llama's)."""
    root = tmp_path_factory.mktemp("evaluate")
    _write(root / "targets" / "gsm" / "val.jsonl", ROWS)
    _write(root / "targets" / "gsm" / "test.jsonl", ROWS + ROWS[:1])
    _write(root / "targets" / "no_test" / "val.jsonl", ROWS)
    tokenizer = train_tokenizer([r["prompt"] + r["answer"] for r in ROWS] * 20, vocab_size=300)
    tokenizer.pad_token = None
    model = build_tiny_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tokenizer,
                             128)
    save_model(model, tokenizer, root / "base")
    adapter = apply_lora(model, LoraConfig(r=2))
    adapter.save_pretrained(root / "finetuned" / "all")
    tokenizer.save_pretrained(root / "finetuned" / "all")
    assert load_tokenizer(root / "finetuned" / "all").pad_token_id is None
    return root


def test_evaluate_with_a_padless_tokenizer(project: Path) -> None:
    data = DataConfig(targets=str(project / "targets"), max_seq_len=64)
    gsm = tasks_to_evaluate(data, "gsm")
    metrics = run_evaluate(EvaluateConfig(batch_size=2), data, project / "base", project / "finetuned" / "all", gsm)
    assert list(metrics) == ["gsm"]
    m = metrics["gsm"]
    assert m["n"] == 3 and set(m["subtasks"]) == {"arith", "qa"} and m["loss"] > 0
    assert m["max_new_tokens"] >= 1 and m["answers_too_long"] == 0


def test_a_task_without_test_split_is_refused_before_loading(project: Path) -> None:
    data = DataConfig(targets=str(project / "targets"))
    with pytest.raises(InflowError, match="no_test have no test split"):
        run_evaluate(EvaluateConfig(), data, project / "missing-base", project / "finetuned" / "all")


def test_the_adapter_name_picks_the_task(project: Path) -> None:
    data = DataConfig(targets=str(project / "targets"))
    assert [t.name for t in tasks_to_evaluate(data, "all")] == ["gsm", "no_test"]
    with pytest.raises(InflowError, match="'mmlu' matches no target task .* gsm, no_test"):
        tasks_to_evaluate(data, "mmlu")


def test_evaluation_device() -> None:
    assert evaluation_device(EvaluateConfig()) == (torch.device("cpu"), None)
    assert evaluation_device(EvaluateConfig(precision="bfloat16")) == (torch.device("cpu"), torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(InflowError, match="evaluate.precision float16 needs a GPU"):
            evaluation_device(EvaluateConfig(device="auto", precision="float16"))
        with pytest.raises(InflowError, match="evaluate.device is 'cuda'"):
            evaluation_device(EvaluateConfig(device="cuda"))


@pytest.mark.parametrize(("section", "fragment"), [
    ({"device": "gpu"}, "evaluate.device: must be cpu, cuda, cuda:N or auto"),
    ({"max_new_tokens": -1}, "evaluate.max_new_tokens: must be >= 0"),
    ({"precision": "float16"}, "evaluate.precision: float16 is for GPUs"),
    ({"precision": "int8"}, "evaluate.precision: must be one of"),
])
def test_bad_evaluate_settings_name_the_key(section: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        params_from_dict({"evaluate": section})
    assert fragment in str(info.value)
