"""Per-example LoRA gradients as autograd's own gradients of zero "sink" inputs: the capture compiled layers use.

For a LoRA factor y = x W^T (W ``[out, in]``, x ``[B, T, in]``), :class:`SinkLinear` computes y from x, W and a
zero tensor S ``[B, out, in]`` that the forward does not read. Its backward returns dL/dx = go W and, as S's
gradient, ``g_b = go[b]^T @ x[b]``: the per-example gradient of W (the equation of
:func:`~inflow.gradients.per_example.per_example_grads`), summed over a module's calls by autograd itself. So
``torch.autograd.grad(L, sinks)`` returns every factor's per-example gradient with no hook on any module: nothing in
a decoder layer is opaque to the compiler, and a compiled layer is one graph (per shape class) instead of a few
between hooked modules. W's own (summed) gradient is not computed.

:func:`install_sinks` routes a model's LoRA factors through :class:`SinkLinear` (done by
:func:`~inflow.gradients.compiling.compile_layers`); ``per_example_grads`` then takes this path. The sinks of a call
are set on the modules for its duration, so a model with sinks runs one gradient pass at a time (compiled layers
do anyway). Eager, the sinks give the hooks' bits (tested); under autocast the products run in the autocast dtype
as the hooks' do (the backward runs in the forward's autocast state) and are widened to float32, the sinks' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_SINKS = "_inflow_sinks"  # on the model: the LoRA factor Linears routed through SinkLinear, in parameter order


class SinkLinear(torch.autograd.Function):
    """``y = x W^T`` whose third input, a zero ``sink [B, out, in]``, gets the per-example gradients of ``W``."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x, weight, _sink = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        x, weight = ctx.saved_tensors
        n = x.shape[0]
        go = grad_out.reshape(n, -1, grad_out.shape[-1])  # [B, T, out]
        per_example = torch.bmm(go.transpose(1, 2), x.reshape(n, -1, x.shape[-1]))  # [B, out, in]
        return grad_out @ weight, None, per_example


def install_sinks(model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]]) -> None:
    """Route each of ``modules`` (the LoRA factor Linears, :func:`~inflow.gradients.per_example.lora_linears`, bias
    free) through :class:`SinkLinear` with the sink :func:`set_sinks` gives it. Idempotent."""
    if getattr(model, _SINKS, None) is not None:
        return
    for name, module in modules:
        if module.bias is not None:
            raise ValueError(f"{name} has a bias; gradient sinks cover LoRA factors, which have none")
        module.inflow_sink = None
        module.forward = _sink_forward(module)
    setattr(model, _SINKS, [m for _, m in modules])


def sink_modules(model: torch.nn.Module) -> list[torch.nn.Linear] | None:
    """The modules :func:`install_sinks` routed, or None where it did not."""
    return getattr(model, _SINKS, None)


def set_sinks(modules: list[torch.nn.Linear], rows: int) -> list[torch.Tensor]:
    """Fresh zero sinks ``[rows, out, in]`` (float32 at least, requiring grad) on ``modules``; returns them."""
    sinks = []
    for module in modules:
        dtype = torch.promote_types(module.weight.dtype, torch.float32)
        module.inflow_sink = torch.zeros((rows, *module.weight.shape), dtype=dtype, device=module.weight.device,
                                         requires_grad=True)
        sinks.append(module.inflow_sink)
    return sinks


def clear_sinks(modules: list[torch.nn.Linear]) -> None:
    for module in modules:
        module.inflow_sink = None


def _sink_forward(module: torch.nn.Linear) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if module.inflow_sink is None:  # outside a gradient pass (generation, evaluation): a plain Linear
            return F.linear(x, module.weight)
        return SinkLinear.apply(x, module.weight, module.inflow_sink)
    return forward
