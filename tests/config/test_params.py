from __future__ import annotations

import pytest

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
