"""The whole params.yaml as one frozen object, and its loader.

``load_params`` is the only way a stage reads its settings; ``tiny_params`` is the preset the tests and
the integration run use (built in code, not a copied YAML file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inflow.config.loader import from_mapping
from inflow.config.sections import (
    BaselinesConfig,
    BenchmarkConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    FeaturesConfig,
    FinetuneConfig,
    In2CoreConfig,
    ModelConfig,
    SelectConfig,
    SketchConfig,
    TokenizerConfig,
    WarmupConfig,
)
from inflow.errors import ConfigError


def _target_model() -> ModelConfig:
    return ModelConfig(family="qwen2", hidden_size=96, num_layers=3,
                       num_heads=4, intermediate_size=192, seed=1)


@dataclass(frozen=True)
class Params:
    """Every knob of the pipeline, one attribute per params.yaml section."""

    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    selector: ModelConfig = field(default_factory=ModelConfig)  # the small model that selects (LESS-T)
    target: ModelConfig = field(default_factory=_target_model)  # the model fine-tuned on the selection
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    sketch: SketchConfig = field(default_factory=SketchConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    in2core: In2CoreConfig = field(default_factory=In2CoreConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def params_from_dict(data: dict[str, Any] | None) -> Params:
    """Validate a parsed params mapping; unknown sections or keys raise :class:`ConfigError`."""
    return from_mapping(Params, data or {}, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path`` (default: ``params.yaml`` in the working directory)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run from the repository root, or pass --params PATH)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return params_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("params.yaml:", f"{path}:", 1)) from None


def params_to_dict(params: Params) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for writing back to YAML."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(params))


def tiny_params() -> Params:
    """A preset small enough for tests and the DVC integration run (seconds per stage on a CPU)."""
    return dataclasses.replace(
        Params(),
        benchmark=BenchmarkConfig(pool_size=240, val_per_subtask=2, test_per_subtask=4),
        data=DataConfig(max_seq_len=192),
        tokenizer=TokenizerConfig(vocab_size=320),
        selector=ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pretrain_epochs=1),
        target=ModelConfig(family="qwen2", hidden_size=32, num_layers=2,
                           num_heads=2, intermediate_size=64, pretrain_epochs=1, seed=1),
        warmup=WarmupConfig(epochs=2, fraction=0.1, batch_size=8),
        sketch=SketchConfig(dim=256),
        features=FeaturesConfig(batch_size=8, chunk_rows=64),
        distill=DistillConfig(embed_blocks=2, embed_dim=64, landmarks=48),
        in2core=In2CoreConfig(),
        finetune=FinetuneConfig(epochs=1, batch_size=8),
        evaluate=EvaluateConfig(batch_size=16, max_new_tokens=0),
    )
