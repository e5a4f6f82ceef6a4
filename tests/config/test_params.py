from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from inflow.config import Params, load_params, params_from_dict, params_to_dict, tiny_params
from inflow.errors import ConfigError


def test_defaults_round_trip_through_dict() -> None:
    params = Params()
    assert params_from_dict(params_to_dict(params)) == params


def test_tiny_preset_round_trips() -> None:
    params = tiny_params()
    assert params_from_dict(params_to_dict(params)) == params


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"warmup": {"fracton": 0.1}}, "unknown key 'warmup.fracton' (did you mean 'fraction'?)"),
        ({"warmpu": {}}, "unknown key 'warmpu' (did you mean 'warmup'?)"),
        ({"warmup": {"fraction": 2.0}}, "warmup.fraction: must lie in (0, 1]"),
        ({"warmup": {"lora": {"r": "x"}}}, "warmup.lora.r: expected an integer"),
        ({"sketch": {"kind": "gaussian"}}, "sketch.kind: must be one of"),
        ({"selector": {"hidden_size": 30, "num_heads": 4}}, "selector.hidden_size: must be divisible"),
        ({"features": {"batch_size": True}}, "features.batch_size: expected an integer"),
        ({"distill": {"landmark_rule": "farthest"}}, "distill.landmark_rule: must be one of"),
        ({"distill": {"damping": 0}}, "distill.damping: must be positive"),
        ({"distill": {"order": "second", "rule": "round_robin"}}, "distill.rule: round_robin is first-order only"),
        ({"distill": {"landmarks": 1}}, "distill.landmarks: must be at least 2"),
        ({"distill": {"order": "second", "rule": "top_k"}}, "distill.normalize: the second-order weights need"),
        ({"in2core": {"layers": "middle"}}, "in2core.layers: layers and compare take all, first:K or last:K"),
        ({"in2core": {"compare": ["first:0"]}}, "in2core.layers: layers and compare take"),
        ({"in2core": {"layers": []}}, "in2core.layers: name at least one block"),
        ({"in2core": {"model": "full"}}, "in2core.model: must be one of"),
        ({"in2core": {"fraction": 0}}, "in2core.fraction: must lie in (0, 1]"),
    ],
)
def test_bad_values_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        params_from_dict(data)
    assert fragment in str(info.value)


def test_yaml_float_strings_are_numbers() -> None:
    assert params_from_dict({"warmup": {"lr": "1e-3"}}).warmup.lr == pytest.approx(1e-3)


def test_load_params_names_the_file(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("select:\n  fraction: 0\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_params(path)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_config_objects_are_frozen() -> None:
    params = Params()
    with pytest.raises(AttributeError):
        params.select.fraction = 0.5  # type: ignore[misc]


def _merge(base: dict, override: dict) -> dict:
    """``override`` merged into ``base``, section by section and key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_the_less_warmup_preset_in_docs_validates() -> None:
    """docs/training.md's LESS warmup preset, merged into the defaults, is a valid params.yaml."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.startswith("# LESS warmup preset")]
    assert len(blocks) == 1
    params = params_from_dict(_merge(params_to_dict(Params()), yaml.safe_load(blocks[0])))
    warmup = params.warmup
    assert warmup.batch_size * warmup.grad_accum == 128
    assert (warmup.lr, warmup.epochs, warmup.fraction, warmup.warmup_ratio) == (2e-5, 4, 0.05, 0.03)
    assert (warmup.lora.r, warmup.lora.alpha, warmup.lora.dropout) == (128, 512, 0.1)
    assert warmup.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (warmup.device, warmup.precision, warmup.max_grad_norm) == ("cuda", "bfloat16", 1.0)


def test_readme_gpu_params_are_valid() -> None:
    """README's "real model on a GPU" params, merged into the defaults, are a valid params.yaml."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "targets_format: mmlu" in b]
    assert len(blocks) == 1
    params = params_from_dict(_merge(params_to_dict(Params()), yaml.safe_load(blocks[0])))
    assert params.data.targets_format == "mmlu" and not params.selector.build
    assert params.warmup.batch_size * params.warmup.grad_accum == 128
    assert {params.warmup.device, params.finetune.device, params.evaluate.device} == {"cuda"}
    assert params.features.device == "auto" and params.features.precision == "auto"  # the fast path's defaults


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"warmup": {"device": "gpu"}}, "warmup.device: must be cpu, cuda, cuda:N or auto"),
        ({"finetune": {"precision": "float16"}}, "finetune.precision: float16 needs a GPU"),
        ({"finetune": {"grad_accum": 0}}, "finetune.grad_accum: must be at least 1"),
        ({"warmup": {"max_grad_norm": -1}}, "warmup.max_grad_norm: must be >= 0"),
        ({"warmup": {"loss": "mean"}}, "warmup.loss: must be one of ['example', 'token']"),
    ],
)
def test_bad_training_settings_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        params_from_dict(data)
    assert fragment in str(info.value)
