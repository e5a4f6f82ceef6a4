"""features.device and features.precision: autocast extraction is close to float32, the store records the
precision, and a store is never resumed at another precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inflow.config import params_from_dict
from inflow.devices import autocast_dtype, resolve_device
from inflow.errors import ConfigError, InflowError, StoreMismatchError
from inflow.gradients.sinks import sink_modules
from inflow.models.loading import load_causal_lm
from inflow.pipeline.features import FeatureContext, extract_store, open_store
from inflow.pipeline.stores import _takes_turns
from inflow.store import GradientStore
from inflow.training.checkpoint import load_adapter_into


@pytest.mark.slow
def test_bfloat16_autocast_features_are_close_to_float32(tiny_project, tmp_path: Path) -> None:
    fp32 = tiny_project.job(tmp_path / "fp32.zarr", dtype="float32")
    bf16 = tiny_project.job(tmp_path / "bf16.zarr", dtype="float32", precision="bfloat16", device="auto")
    for job in (fp32, bf16):
        extract_store(job, progress=False)
    a, b = GradientStore.open(fp32.store), GradientStore.open(bf16.store)
    assert (a.attrs.precision, b.attrs.precision) == ("float32", "bfloat16")
    x, y = a.read_all(), b.read_all()
    assert not np.array_equal(x, y)  # autocast really ran
    cosine = (x * y).sum(axis=1)  # unit rows
    assert cosine.min() > 0.97, cosine.min()
    np.testing.assert_allclose(b.norms(), a.norms(), rtol=0.1)


@pytest.mark.slow
def test_store_is_not_resumed_at_another_precision(tiny_project, tmp_path: Path) -> None:
    path = tmp_path / "store.zarr"
    open_store(tiny_project.job(path))  # float32, nothing extracted yet
    with pytest.raises(StoreMismatchError, match="precision"):
        open_store(tiny_project.job(path, precision="bfloat16"))
    assert open_store(tiny_project.job(path, precision="bfloat16"), rebuild=True)  # the stage's rebuild
    assert GradientStore.open(path).attrs.precision == "bfloat16"


def test_device_and_precision_settings() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InflowError, match="sees no GPU"):
            resolve_device("cuda:0")
    assert autocast_dtype("float32", torch.device("cpu")) is None
    assert autocast_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(InflowError, match="features.precision float16 needs a GPU"):
        autocast_dtype("float16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="features.device.*cpu, cuda, cuda:N or auto"):
        params_from_dict({"features": {"device": "gpu"}})
    with pytest.raises(ConfigError, match="features.precision"):
        params_from_dict({"features": {"precision": "int8"}})
    assert params_from_dict({"features": {"device": "cuda:1", "precision": "bfloat16"}}).features.device == "cuda:1"
    assert params_from_dict({"features": {"compile": True}}).features.compile is True
    assert params_from_dict({}).features.compile is False  # eager until a GPU has measured compiled layers
    with pytest.raises(ConfigError, match="features.compile: expected true or false"):
        params_from_dict({"features": {"compile": "yes"}})


def test_select_device_setting() -> None:
    """select.device (where LESS's scoring matmuls run) is checked like features.device, and named in errors."""
    with pytest.raises(ConfigError, match="select.device.*cpu, cuda, cuda:N or auto"):
        params_from_dict({"select": {"device": "gpu0"}})
    assert params_from_dict({"select": {"device": "auto"}}).select.device == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(InflowError, match="select.device is 'cuda'"):
            resolve_device("cuda", "select.device")
    with pytest.raises(ConfigError, match="features.sketch_group_mib"):
        params_from_dict({"features": {"sketch_group_mib": -1}})


def test_bfloat16_extraction_prepares_the_model_for_autocast(tiny_project, tmp_path: Path) -> None:
    job = tiny_project.job(tmp_path / "bf16.zarr", precision="bfloat16", device="cpu")
    ctx = FeatureContext(job)
    base = {name: m.weight.dtype for name, m in ctx.model.named_modules()
            if type(m) is torch.nn.Linear and "lora_" not in name}
    head = ctx.model.get_output_embeddings()
    tied = head.weight is ctx.model.get_input_embeddings().weight
    assert {dtype for name, dtype in base.items() if not name.endswith("lm_head")} == {torch.bfloat16}
    assert head.weight.dtype == (torch.float32 if tied else torch.bfloat16)
    assert {p.dtype for _, p in ctx.model.named_parameters() if p.requires_grad} == {torch.float32}
    assert ctx.attrs.extraction["autocast_inputs"] == "shared"
    rows = ctx.rows[:6]
    got = ctx.featurize(rows, job).double()
    ctx.model = load_adapter_into(load_causal_lm(job.base_model), job.checkpoint).eval()  # float32 weights
    want = ctx.featurize(rows, job).double()
    assert not torch.equal(got, want)  # shared casts: the backward adds in bfloat16
    assert ((got - want).norm(dim=1) / want.norm(dim=1)).max() < 0.05
    plain = FeatureContext(tiny_project.job(tmp_path / "fp32.zarr"))
    assert {p.dtype for p in plain.model.parameters()} == {torch.float32}
    assert "autocast_inputs" not in plain.attrs.extraction


def test_a_batch_out_of_memory_says_which_setting_to_lower(tiny_project, tmp_path: Path) -> None:
    """A real allocation failure inside a gradient pass (a hook asks the CPU allocator for 32 TiB) becomes a user
    error naming the batch, the token budget and the settings that fix it; other errors pass through unchanged."""
    job = tiny_project.job(tmp_path / "oom.zarr", batch_tokens=512)
    ctx = FeatureContext(job)
    layer = ctx.model.get_base_model().model.layers[0]
    handle = layer.register_forward_hook(lambda *_: torch.empty(1 << 45, dtype=torch.uint8))
    try:
        with pytest.raises(InflowError, match=r"rows x \d+ tokens \(\d+ of features.batch_tokens 512\) ran out of "
                                              r"memory on cpu: set features.batch_tokens lower \(e.g. 256\)"):
            ctx.featurize(ctx.rows[:4], job)
    finally:
        handle.remove()
    handle = layer.register_forward_hook(lambda *_: torch.ones(2) @ torch.ones(3))  # a shape error stays itself
    try:
        with pytest.raises(RuntimeError, match="size"):
            ctx.featurize(ctx.rows[:4], job)
    finally:
        handle.remove()
    assert ctx.featurize(ctx.rows[:4], job).shape == (4, ctx.sketch.out_dim)  # the context still works


@pytest.mark.slow
def test_a_compiled_extraction_is_close_to_eager_and_recorded(tiny_project, tmp_path: Path) -> None:
    """features.compile: the stage compiles the layers (one batch at a time), rows agree with eager ones to float32
    rounding, and the store records it."""
    eager = FeatureContext(tiny_project.job(tmp_path / "eager.zarr", threads=2))
    job = tiny_project.job(tmp_path / "compiled.zarr", threads=2, compile=True)
    ctx = FeatureContext(job)
    assert (eager.workers, ctx.workers) == (2, 1)
    assert _takes_turns(job) and not _takes_turns(tiny_project.job(tmp_path / "e.zarr"))  # chunks one at a time
    assert ctx.attrs.extraction["compiled"] is True and "compiled" not in eager.attrs.extraction
    assert sink_modules(ctx.model) is not None and sink_modules(eager.model) is None  # sinks, not hooks
    rows = ctx.rows[:8]
    got, want = ctx.featurize(rows, job).double(), eager.featurize(rows, job).double()
    assert ((got - want).norm(dim=1) / want.norm(dim=1)).max() < 1e-4
