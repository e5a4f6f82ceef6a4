"""Settings: params.yaml sections as frozen, validated dataclasses."""

from inflow.config.loader import from_mapping, require
from inflow.config.params import Params, load_params, params_from_dict, params_to_dict, tiny_params
from inflow.config.sections import (
    BaselinesConfig,
    BenchmarkConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    FeaturesConfig,
    FinetuneConfig,
    In2CoreConfig,
    LoraConfig,
    ModelConfig,
    SelectConfig,
    SketchConfig,
    TokenizerConfig,
    TrainConfig,
    WarmupConfig,
)

__all__ = [
    "BaselinesConfig", "BenchmarkConfig", "DataConfig", "DistillConfig", "EvaluateConfig", "FeaturesConfig", "FinetuneConfig",
    "In2CoreConfig", "LoraConfig", "ModelConfig", "Params", "SelectConfig", "SketchConfig", "TokenizerConfig",
    "TrainConfig", "WarmupConfig",
    "from_mapping", "load_params", "params_from_dict", "params_to_dict", "require", "tiny_params",
]
