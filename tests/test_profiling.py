"""``inflow.profiling.region``: named in a profile, nothing outside one; the gradient path's regions nest."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile

from inflow.gradients.per_example import per_example_grads
from inflow.profiling import region
from tests.gradients.test_per_example import LENGTHS, make_batch, tiny_lora


def test_region_is_a_no_op_without_a_profiler() -> None:
    assert isinstance(region("forward"), nullcontext)


def test_region_is_a_named_event_under_a_profiler() -> None:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with region("sketch"):
            torch.ones(3).sum()
    names = [e.name for e in prof.events()]
    assert "inflow.sketch" in names
    summed = next(e for e in prof.events() if e.name == "aten::sum")
    assert summed.cpu_parent is not None and summed.cpu_parent.name == "inflow.sketch"


def test_the_outer_products_are_marked_inside_the_backward() -> None:
    model, batch = tiny_lora(), make_batch(LENGTHS)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        per_example_grads(model, batch)
    by_name: dict[str, list] = {}
    for e in prof.events():
        by_name.setdefault(e.name, []).append(e)
    assert {"inflow.forward", "inflow.head", "inflow.backward", "inflow.outer_products"} <= set(by_name)
    for e in by_name["inflow.outer_products"]:  # called from the hooks, during the backward
        assert any(p.name == "inflow.backward" for p in _ancestors(e))
    assert all(any(p.name == "inflow.forward" for p in _ancestors(e)) for e in by_name["inflow.head"])


def _ancestors(event):
    node = event.cpu_parent
    while node is not None:
        yield node
        node = node.cpu_parent
