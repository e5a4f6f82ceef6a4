"""Activation checkpointing of decoder layers for per-example gradient passes (``features.gradient_checkpointing``).

A gradient pass keeps every decoder layer's activations from the forward to the backward: tens of ``[B, T, h]``
tensors per layer (attention and MLP intermediates). With checkpointing a layer keeps only its input; its forward
runs again in the backward to rebuild the rest (``torch.utils.checkpoint``, non-reentrant), so memory per token
drops several times for half again the matmul work (the base weights are frozen, so the backward computes input
gradients only, as many FLOPs as the forward, which now runs twice). transformers' own switch
(``gradient_checkpointing_enable``) acts only in training mode, and extraction runs in eval mode (no dropout), so
the layers are wrapped here.

:func:`~inflow.gradients.per_example.per_example_grads` then takes a LoRA factor's input from the recomputed forward
(:func:`checkpointed_modules`), not the first: what a checkpointed layer keeps from its forward to its backward is
its input alone. The recomputed
forward gives the same bits as the first (same kernels, same inputs), so checkpointing does not change a store's
bytes (tested); the features are those of the plain pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

_WRAPPED = "_inflow_checkpointed"


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers: transformers' ``GradientCheckpointingLayer`` modules (every decoder layer of a
    current causal LM), outermost first."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def checkpointed_modules(model: torch.nn.Module) -> set[int]:
    """Ids of the modules inside decoder layers that :func:`checkpoint_layers` wrapped (their forwards run again in
    the backward)."""
    return {id(m) for layer in decoder_layers(model) if getattr(layer, _WRAPPED, False) for m in layer.modules()}


def checkpoint_layers(model: torch.nn.Module) -> int:
    """Recompute each decoder layer's forward in the backward instead of keeping its activations; returns the number
    of layers wrapped (0 when the model has none that transformers marks). Idempotent; only where gradients are on
    (``torch.no_grad`` forwards run as before)."""
    layers = decoder_layers(model)
    for layer in layers:
        if getattr(layer, _WRAPPED, False):
            continue
        layer.forward = _checkpointed(layer.forward)
        setattr(layer, _WRAPPED, True)
    return len(layers)


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
