"""Gradient sinks: the per-example gradients as autograd's gradients of zero inputs, eager, give the hooks' bits
(float32 and bfloat16 autocast, every LoRA target, batch shapes, checkpointing) and leave the model usable."""

from __future__ import annotations

import pytest
import torch

from inflow.errors import InflowError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.checkpointing import checkpoint_layers
from inflow.gradients.per_example import lora_linears, per_example_grads
from inflow.gradients.sinks import install_sinks, sink_modules
from inflow.models.autocast import autocast_only
from tests.gradients.test_per_example import ALL, make_batch, tiny_lora

BATCHES = [([11, 5, 14, 8], None), ([9, 16], 20), ([13], None)]


def _sinks(model: torch.nn.Module) -> torch.nn.Module:
    install_sinks(model, lora_linears(model, lora_parameters(model)))
    return model


def _grads(model: torch.nn.Module, amp: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for lengths, width in BATCHES:
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            out.append(per_example_grads(model, make_batch(lengths, width)))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sinks_give_the_hooks_bits(dtype: torch.dtype) -> None:
    want = _grads(tiny_lora(targets=ALL, dtype=dtype))
    model = _sinks(tiny_lora(targets=ALL, dtype=dtype))
    assert len(sink_modules(model)) == len(lora_parameters(model))
    got = _grads(model)
    for (g, loss), (w, want_loss) in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w) and torch.equal(loss, want_loss)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.inflow_sink is None for m in sink_modules(model))  # cleared after each pass


def test_sinks_under_bfloat16_autocast_and_checkpointing_give_the_hooks_bits() -> None:
    hooked = tiny_lora(dtype=torch.float32)
    autocast_only(hooked, torch.bfloat16)
    want = _grads(hooked, torch.bfloat16)
    model = tiny_lora(dtype=torch.float32)
    autocast_only(model, torch.bfloat16)
    _sinks(model)
    assert all(torch.equal(g, w) for (g, _), (w, _) in zip(_grads(model, torch.bfloat16), want))
    checkpoint_layers(model)
    assert all(torch.equal(g, w) for (g, _), (w, _) in zip(_grads(model, torch.bfloat16), want))


def test_a_model_with_sinks_still_runs_plain_forwards_and_refuses_a_merged_adapter() -> None:
    model = tiny_lora(dtype=torch.float32).eval()  # (LoRA dropout off)
    batch = make_batch([7, 5])
    plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    _sinks(model)
    again = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(plain, again)  # outside a gradient pass a factor is a plain Linear
    model.merge_adapter()  # the factors no longer run: their sinks get no gradient
    with pytest.raises(InflowError, match="did not run in the forward pass"):
        per_example_grads(model, batch)
