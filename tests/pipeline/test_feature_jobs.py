"""Which checkpoints and base model a features stage uses: ``features.warmup_dir``, ``features.checkpoints``,
``features.base_model``, our warmup stage's manifest, or the checkpoints' ``adapter_config.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inflow.config import FeaturesConfig
from inflow.errors import CheckpointError
from inflow.pipeline.feature_jobs import checkpoints_for


def _run(root: Path, steps: list[int], base: str | None) -> Path:
    for step in steps:
        ckpt = root / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        config = {"base_model_name_or_path": base} if base else {}
        (ckpt / "adapter_config.json").write_text(json.dumps(config))
    return root


def test_external_run_takes_the_base_model_from_the_adapter_config(tmp_path: Path) -> None:
    run = _run(tmp_path / "less-run", [10, 20], base="/models/llama-2-7b")
    checkpoints, base = checkpoints_for(FeaturesConfig(warmup_dir=str(run)), run, "models/base/selector")
    assert [c.name for c in checkpoints] == ["checkpoint-10", "checkpoint-20"] and base == "/models/llama-2-7b"
    named, _ = checkpoints_for(FeaturesConfig(checkpoints=("checkpoint-20",)), run, "unused")
    assert named == [run / "checkpoint-20"]
    _, given = checkpoints_for(FeaturesConfig(base_model="/models/other"), run, "unused")
    assert given == "/models/other"


def test_our_warmup_run_uses_the_selector(tmp_path: Path) -> None:
    run = _run(tmp_path / "warmup", [3], base="somewhere/else")
    (run / "warmup.json").write_text("{}")
    assert checkpoints_for(FeaturesConfig(), run, "models/base/selector")[1] == "models/base/selector"


def test_missing_checkpoint_or_base_model_says_what_to_set(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", [5], base=None)
    with pytest.raises(CheckpointError, match="set features.base_model"):
        checkpoints_for(FeaturesConfig(), run, "unused")
    with pytest.raises(CheckpointError, match=r"no checkpoint directory at .*checkpoint-9"):
        checkpoints_for(FeaturesConfig(checkpoints=("checkpoint-9",), base_model="b"), run, "unused")
