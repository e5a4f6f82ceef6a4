"""The ``evaluate`` step: a fine-tuned adapter on the base target model, scored on target test splits.

The adapter folder's name says what it was fine-tuned for: a target task's name, or ``all`` (one model for
every task). Target tasks come from ``load_targets(data)`` (``data.targets`` in ``data.targets_format``);
evaluation runs on ``evaluate.device`` under autocast to ``evaluate.precision`` (weights stay float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import PeftModel

from inflow.config import DataConfig, EvaluateConfig
from inflow.data.render import encode_targets
from inflow.data.targets import TargetTask, load_targets
from inflow.devices import autocast_dtype, resolve_device
from inflow.errors import InflowError
from inflow.evaluation import answer_losses, evaluate_split
from inflow.models.loading import load_causal_lm
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.selection.outputs import ALL_TARGETS


def evaluation_device(cfg: EvaluateConfig) -> tuple[torch.device, torch.dtype | None]:
    """``evaluate.device`` as a torch device and ``evaluate.precision`` as an autocast dtype (None: float32)."""
    device = resolve_device(cfg.device, key="evaluate.device")
    return device, autocast_dtype(cfg.precision, device, "evaluate.precision")


def tasks_to_evaluate(data: DataConfig, adapter_name: str) -> list[TargetTask]:
    """The target tasks a model fine-tuned for ``adapter_name`` is scored on: all for ``all``, else the named one."""
    tasks = load_targets(data)
    if adapter_name == ALL_TARGETS:
        return tasks
    chosen = [t for t in tasks if t.name == adapter_name]
    if not chosen:
        raise InflowError(f"the fine-tuned model {adapter_name!r} matches no target task of {data.targets} "
                          f"(tasks: {', '.join(t.name for t in tasks)}); rerun the selection and finetune stages "
                          "after changing data.targets")
    return chosen


def _check_test_splits(tasks: Sequence[TargetTask]) -> None:
    missing = [t.name for t in tasks if t.test.height == 0]
    if missing:
        raise InflowError(f"target task(s) {', '.join(missing)} have no test split, so they cannot be evaluated; "
                          "give each a test split (jsonl format: <task>/test.jsonl; LESS formats: a test.jsonl "
                          "beside the file, or MMLU's test/ CSVs) and rerun")


def load_finetuned(cfg: EvaluateConfig, model_dir: str | Path, adapter_dir: str | Path):  # noqa: ANN201
    """(model in eval mode on ``evaluate.device``, tokenizer, device, autocast dtype) of the base model at
    ``model_dir`` with the LoRA adapter at ``adapter_dir``."""
    device, dtype = evaluation_device(cfg)
    tokenizer = load_tokenizer(adapter_dir)
    model = PeftModel.from_pretrained(load_causal_lm(model_dir), adapter_dir).to(device)
    model.eval()
    return model, tokenizer, device, dtype


def run_evaluate(cfg: EvaluateConfig, data: DataConfig, model_dir: str | Path, adapter_dir: str | Path,
                 tasks: Sequence[TargetTask] | None = None) -> dict[str, dict]:
    """{task name: metrics} of the base model at ``model_dir`` with the LoRA adapter at ``adapter_dir``.

    ``tasks`` defaults to :func:`tasks_to_evaluate` for the adapter folder's name. Every task needs a test
    split (checked before any model is loaded).
    """
    tasks = tasks_to_evaluate(data, Path(adapter_dir).name) if tasks is None else list(tasks)
    _check_test_splits(tasks)
    model, tokenizer, device, dtype = load_finetuned(cfg, model_dir, adapter_dir)
    return {task.name: evaluate_split(model, tokenizer, task.test, data.max_seq_len, cfg.batch_size,
                                      cfg.max_new_tokens, device=device, dtype=dtype, task=task.name)
            for task in tasks}


def example_test_losses(cfg: EvaluateConfig, data: DataConfig, model_dir: str | Path, adapter_dir: str | Path,
                        task: TargetTask) -> dict[str, float]:
    """{example id: mean answer-token loss} of ``task``'s test rows under the base model at ``model_dir`` with the
    LoRA adapter at ``adapter_dir`` (what In2Core's coverage is compared with)."""
    _check_test_splits([task])
    model, tokenizer, device, dtype = load_finetuned(cfg, model_dir, adapter_dir)
    encoded, dropped = encode_targets(task.test, tokenizer, data.max_seq_len)
    if dropped:
        raise InflowError(f"{len(dropped)} test rows of {task.name} lose their whole answer at "
                          f"max_seq_len={data.max_seq_len}; raise data.max_seq_len")
    losses = answer_losses(model, encoded, pad_token_id(tokenizer), cfg.batch_size, device, dtype)
    return {e.example_id: float(loss) for e, loss in zip(encoded, losses)}
