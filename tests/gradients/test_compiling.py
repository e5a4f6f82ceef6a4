"""Compiled decoder layers (``features.compile``): the per-example gradients of eager layers to rounding, through
gradient sinks (every LoRA factor, no graph break), batch shapes that vary, activation checkpointing, and a bfloat16
model prepared for autocast. Compiling takes tens of seconds on this CPU (inductor builds C++), hence ``slow``."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from inflow.gradients.checkpointing import checkpoint_layers
from inflow.gradients.compiling import RECOMPILE_LIMIT, compile_layers
from inflow.gradients.per_example import per_example_grads
from inflow.models.autocast import autocast_only
from tests.gradients.test_per_example import ALL, make_batch, tiny_lora

# right-padded batches of several shapes, one of a single row (a dimension of 1 is its own graph)
BATCHES = [([11, 5, 14, 8], None), ([9, 16], 20), ([13], None), ([6, 7, 12, 3, 10], 16)]


def _grads(model: torch.nn.Module, amp: torch.dtype | None = None) -> list[torch.Tensor]:
    out = []
    for lengths, width in BATCHES:
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            out.append(per_example_grads(model, make_batch(lengths, width))[0])
    return out


def _worst(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return max(float(((g.double() - w.double()).norm(dim=1) / w.double().norm(dim=1)).max())
               for g, w in zip(got, want))


@pytest.mark.slow
def test_compiled_layers_give_the_eager_gradients_to_rounding() -> None:
    eager = tiny_lora(targets=ALL, dtype=torch.float32)
    want = _grads(eager)
    model = tiny_lora(targets=ALL, dtype=torch.float32)
    assert compile_layers(model) == 2 and compile_layers(model) == 2  # idempotent
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    got = _grads(model)
    assert counters["stats"]["unique_graphs"] > graphs  # the layers really ran compiled
    assert sum(counters["graph_break"].values()) == breaks  # each whole: gradient sinks, no hooks
    assert all(bool((g.abs().sum(dim=1) > 0).all()) for g in got)  # every row got a gradient through the hooks
    assert _worst(got, want) < 1e-5
    again = _grads(model)
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # the compiled pass repeats bit for bit
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_checkpointing_wraps_the_compiled_layers() -> None:
    want = _grads(tiny_lora(dtype=torch.float32))
    model = tiny_lora(dtype=torch.float32)
    compile_layers(model)
    checkpoint_layers(model)
    assert _worst(_grads(model), want) < 1e-5


@pytest.mark.slow
def test_a_bfloat16_model_prepared_for_autocast_compiles_whole() -> None:
    reference = _grads(tiny_lora(dtype=torch.float64))
    eager = tiny_lora(dtype=torch.float32)
    autocast_only(eager, torch.bfloat16)  # as the eager stage: shared casts
    model = tiny_lora(dtype=torch.float32)
    autocast_only(model, torch.bfloat16, share_casts=False)  # as the compiled stage: the compiler shares them
    compile_layers(model)
    breaks = sum(counters["graph_break"].values())
    got, plain = _grads(model, torch.bfloat16), _grads(eager, torch.bfloat16)
    assert _worst(got, plain) < 0.02  # bfloat16's own level: fused kernels round otherwise
    assert _worst(got, reference) < 1.5 * _worst(plain, reference) + 1e-3  # no further from float64 than eager
    assert sum(counters["graph_break"].values()) == breaks


def test_layers_are_compiled_before_they_are_checkpointed() -> None:
    model = tiny_lora(dtype=torch.float32)
    checkpoint_layers(model)
    with pytest.raises(ValueError, match="compile the decoder layers before checkpointing them"):
        compile_layers(model)


def test_compiling_leaves_room_for_many_graph_variants() -> None:
    """torch falls back to eager, silently, past its recompile limit; a process compiling layers raises it."""
    compile_layers(tiny_lora(dtype=torch.float32))  # (nothing compiles before the first call)
    assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT > 8
