"""The ``evaluate`` step: a fine-tuned adapter on the base target model, scored on target test splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft import PeftModel

from inflow.config import DataConfig, EvaluateConfig
from inflow.data.targets import TargetTask
from inflow.evaluation import evaluate_split
from inflow.models.loading import load_causal_lm
from inflow.models.tokenizer import load_tokenizer


def run_evaluate(cfg: EvaluateConfig, data: DataConfig, model_dir: str | Path, adapter_dir: str | Path,
                 tasks: Sequence[TargetTask]) -> dict[str, dict]:
    """{task name: metrics} of the base model at ``model_dir`` with the LoRA adapter at ``adapter_dir``."""
    tokenizer = load_tokenizer(adapter_dir)
    model = PeftModel.from_pretrained(load_causal_lm(model_dir), adapter_dir)
    model.eval()
    out = {}
    for task in tasks:
        if len(task.test) == 0:
            raise ValueError(f"target task {task.name} has no test split; add {task.name}/test.jsonl")
        out[task.name] = evaluate_split(model, tokenizer, task.test, data.max_seq_len, cfg.batch_size,
                                        cfg.max_new_tokens)
    return out
