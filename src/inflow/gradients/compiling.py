"""Compiled decoder layers for per-example gradient passes (``features.compile``).

An eager decoder layer runs each elementwise step as its own kernel, reading and writing whole ``[B, T, h]``
tensors: RMSNorm in float32 (square, mean, scale, weight), the 16-bit casts, rotary embedding, LoRA's scaling and
add, the residual adds, SiLU times the up projection, and again for each in the backward. By our count that is
about 1 MB per token and layer at a 1B model's shape under bfloat16, which an H200's memory streams in about as
long as its tensor cores take for the layer's matmuls: the elementwise passes could be near half of a GPU pass
(``benchmarks/breakdown.py`` measures the share). ``torch.compile`` (inductor) fuses each run of them into one
kernel, forward and backward.

:func:`compile_layers` compiles every decoder layer's forward (``dynamic=True``: batch shapes vary with the token
budget and the length buckets, so one graph serves them all, and the layers share it). The per-example gradients
then come from gradient sinks (:mod:`inflow.gradients.sinks`), not from hooks on the LoRA modules, so nothing in a
layer breaks its graph: a layer compiles whole, forward and backward, outer products included, and inductor fuses
every run of elementwise passes. A model prepared for autocast should be prepared without the shared-cast hooks
(``autocast_only(share_casts=False)``): within one graph the compiler shares a cast among its readers itself, and
the hooks would break the graph at every Linear (they are opaque to it, ``torch.compiler.disable``, as the
routing hooks of :func:`~inflow.gradients.per_example.per_example_grads` are, should either meet a compiled layer).

Fused kernels round differently from eager ones (intermediates stay in float32 registers, reductions run in
another order), so compiled features agree with eager ones to rounding (float32: ~1e-6; bfloat16: at its level)
and stores record ``compiled: true``. Activation checkpointing wraps the compiled forward (recomputed in the
backward as compiled). Not under Influence Distillation's Hessian products: compiled graphs have no double backward.
"""

from __future__ import annotations

import torch

from inflow.gradients.blocks import lora_parameters
from inflow.gradients.checkpointing import _WRAPPED as CHECKPOINTED
from inflow.gradients.checkpointing import decoder_layers
from inflow.gradients.per_example import lora_linears
from inflow.gradients.sinks import install_sinks

_COMPILED = "_inflow_compiled"
# Graphs compiled per code object before torch falls back to eager for it, silently: a layer's forward gets one per
# variant of its guards (the first layer's input needs no gradient, the others' do; a batch of one row; the padding
# mask or none; each dtype and autocast setting), and the layers of every model compiled in the process share them.
# torch's default, 8, is reached by a process that extracts under two settings; ours leaves room for many.
RECOMPILE_LIMIT = 64


def compile_layers(model: torch.nn.Module) -> int:
    """Replace each decoder layer's forward by ``torch.compile(forward, dynamic=True)``, the LoRA factors routed
    through gradient sinks; returns the number compiled (0 when the model has no layer transformers marks).
    Idempotent; before :func:`~inflow.gradients.checkpointing.checkpoint_layers`, which then wraps the compiled
    forward. Compilation happens on the first call (seconds to a minute, once per process; the layers share the
    graphs)."""
    layers = decoder_layers(model)
    if layers:  # gradient sinks instead of hooks: nothing in a layer is opaque to the compiler
        install_sinks(model, lora_linears(model, lora_parameters(model)))
    if layers and torch._dynamo.config.recompile_limit < RECOMPILE_LIMIT:
        torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    for layer in layers:
        if getattr(layer, _COMPILED, False):
            continue
        if getattr(layer, CHECKPOINTED, False):  # the compiler would have to trace torch.utils.checkpoint
            raise ValueError("compile the decoder layers before checkpointing them (checkpoint_layers wraps the "
                             "compiled forward)")
        layer.forward = torch.compile(layer.forward, dynamic=True)
        setattr(layer, _COMPILED, True)
    return len(layers)

