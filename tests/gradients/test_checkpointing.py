"""Activation checkpointing of decoder layers: the same per-example gradients, bit for bit, and less kept memory."""

from __future__ import annotations

import copy
import threading

import torch
from test_per_example import ALL, LENGTHS, make_batch, tiny_lora
from torch.multiprocessing.reductions import StorageWeakRef

from inflow.gradients.blocks import lora_parameters
from inflow.gradients.checkpointing import checkpoint_layers, decoder_layers
from inflow.gradients.per_example import (
    lora_linears,
    per_example_grads,
    per_example_grads_loop,
)
from inflow.parallel import torch_threads


def _saved_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward during one gradient pass (peak of the running total)."""
    live = {"now": 0, "peak": 0}

    def pack(t: torch.Tensor) -> tuple[torch.Tensor, int]:
        size = t.numel() * t.element_size()
        live["now"] += size
        live["peak"] = max(live["peak"], live["now"])
        return t, size

    def unpack(packed: tuple[torch.Tensor, int]) -> torch.Tensor:
        return packed[0]

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        per_example_grads(model, batch)
    return live["peak"]


def test_checkpointed_layers_give_the_same_bits() -> None:
    model = tiny_lora(dtype=torch.float32, targets=ALL)
    batch = make_batch(LENGTHS, width=16)
    with torch_threads(1):
        plain, plain_losses = per_example_grads(model, batch)
        wrapped = copy.deepcopy(model)
        assert checkpoint_layers(wrapped) == len(decoder_layers(wrapped)) == 2
        assert checkpoint_layers(wrapped) == 2  # idempotent
        again, again_losses = per_example_grads(wrapped, batch)
    assert torch.equal(plain, again) and torch.equal(plain_losses, again_losses)


def test_checkpointed_float64_matches_the_reference_loop() -> None:
    model = tiny_lora(targets=ALL)
    checkpoint_layers(model)
    batch = make_batch(LENGTHS)
    fast, _ = per_example_grads(model, batch)
    loop, _ = per_example_grads_loop(model, batch)
    torch.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-12)


def test_checkpointing_keeps_fewer_activations() -> None:
    model = tiny_lora(dtype=torch.float32, targets=ALL)
    batch = make_batch([60, 58, 64, 50], width=72)
    plain = _saved_bytes(model, batch)
    checkpoint_layers(model)
    assert _saved_bytes(model, batch) < plain / 2


def _first_inputs_alive_at_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """How many LoRA factors' first-forward inputs are still alive when the backward starts (at the final norm,
    before any decoder layer's backward or recompute)."""
    params = lora_parameters(model)
    firsts: list[StorageWeakRef] = []  # the storages: what is held is a detached alias
    seen: set[int] = set()

    def note(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if id(module) not in seen:  # the first forward, not the recompute
            seen.add(id(module))
            firsts.append(StorageWeakRef(args[0].untyped_storage()))

    alive: list[int] = []

    def at_norm(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        out.register_hook(lambda grad: alive.append(sum(not ref.expired() for ref in firsts)))

    handles = [m.register_forward_hook(note) for _, m in lora_linears(model, params)]
    handles.append(model.get_base_model().model.norm.register_forward_hook(at_norm))
    try:
        per_example_grads(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    assert len(firsts) == len(lora_linears(model, params)) and len(alive) == 1
    return alive[0]


def test_a_checkpointed_layer_keeps_no_lora_input_from_its_first_forward() -> None:
    """Under checkpointing the factors' inputs come from the recomputed forward (paired with their gradients in
    either order: q/k/v's inputs come first, down_proj's gradient does), so none of the first forward's is held."""
    model = tiny_lora(dtype=torch.float32, targets=ALL)
    batch = make_batch(LENGTHS, width=16)
    assert _first_inputs_alive_at_backward(model, batch) > 0  # without checkpointing they are held (and saved)
    checkpoint_layers(model)
    assert _first_inputs_alive_at_backward(model, batch) == 0


def test_a_recompute_on_autograd_s_own_thread_reaches_the_one_call_in_its_backward() -> None:
    """On a GPU the recompute runs on autograd's device thread, which runs no call: the one call in its backward
    takes it. A thread running a call of its own (a CPU batch in its first forward) never takes another's."""
    from inflow.gradients import per_example as pe

    module, got = torch.nn.Linear(2, 2), []
    x = torch.ones(1, 2)
    pe._RECOMPUTES[-1] = {id(module): got.append}  # a call in its backward, on some other thread
    try:
        pe._route_recompute(module, (x,))  # this test's thread runs no call: like autograd's device thread
        assert len(got) == 1 and got[0][0] is x
        pe._ROUTES[threading.get_ident()] = {}  # now it runs a call (in its forward)
        try:
            pe._route_recompute(module, (x,))
        finally:
            del pe._ROUTES[threading.get_ident()]
        assert len(got) == 1
        pe._RECOMPUTES[-2] = {id(module): got.append}  # two calls in their backward: whose it is is unknown
        pe._route_recompute(module, (x,))
        assert len(got) == 1
    finally:
        pe._RECOMPUTES.pop(-1, None)
        pe._RECOMPUTES.pop(-2, None)
