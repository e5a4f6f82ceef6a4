"""A model that only runs under ``torch.autocast``: what autocast makes redundant, removed.

Under ``torch.autocast(dtype=bf16)`` a Linear multiplies in bfloat16 whatever its inputs' dtypes: it rounds a
float32 weight and a float32 input on every call, and keeps each rounded copy for the backward (autocast caches
casts only of leaf tensors that require grad: trainable weights, not frozen ones, not activations). The features
stage holds float32 weights only to be rounded, so at Llama-2-7B's shape a gradient pass kept 27 GB of float32
weights, 13.5 GB of their per-call bfloat16 copies, and per token and layer a bfloat16 copy of the attention norm's
float32 output for each LoRA factor that reads it (q, k, v: the same tensor rounded three times, and once more for
each frozen layer, transiently), and a float32 copy of ``o_proj``'s 16-bit input. :func:`autocast_only` removes
them (measured by ``benchmarks/activations.py``; ``docs/benchmarks.md``):

- :func:`cast_frozen_linears`: frozen Linear weights held in ``dtype`` (the same bits: rounding once is rounding
  every time);
- peft's cast of a LoRA layer's input to its float32 factors' dtype is switched off: a 16-bit input (an attention
  output into ``o_proj``) was made float32, kept, and rounded back by autocast, a second copy kept (the same bits);
- :func:`share_input_casts`: a float32 input is rounded once, and every Linear or LoRA layer that reads it reads that
  one copy. The forward is the same bits; the backward adds the consumers' input gradients in ``dtype`` (autograd
  accumulates a tensor's gradient in its dtype) instead of float32, and LoRA's per-example outer products read the
  rounded input the forward multiplied rather than the float32 one: other bits, as close as bfloat16 allows
  (tested), so stores record it (``autocast_inputs: shared``, :func:`inflow.pipeline.features.extraction_settings`).

Embeddings, norms and the residual stream stay float32 (autocast leaves them alone): that is the difference from
loading the whole model in bfloat16, as LESS does.
"""

from __future__ import annotations

import threading

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch.utils.weak import WeakIdKeyDictionary


def autocast_only(model: torch.nn.Module, dtype: torch.dtype, *, share_casts: bool = True) -> int:
    """Prepare ``model``, in place, to run only under ``torch.autocast(dtype=dtype)`` (see the module docstring);
    returns the bytes of weights freed. ``share_casts=False`` keeps the float32 model's bits exactly (no
    :func:`share_input_casts`). Not for a model that also runs outside autocast (Influence Distillation's Hessian
    products differentiate it in float32): its 16-bit weights would meet float32 inputs there.
    """
    freed = cast_frozen_linears(model, dtype)
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # read by peft's _cast_input_dtype
    if share_casts:
        share_input_casts(model)
    return freed


def cast_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Hold the frozen float32 weights (and biases) of ``model``'s ``nn.Linear`` layers in ``dtype``, in place;
    returns the bytes freed. Under autocast to ``dtype`` the products are the same bits.

    Left as they are: trainable parameters and LoRA's factors (``lora_*`` modules), anything not a plain
    ``nn.Linear`` (embeddings and norms run outside autocast's lists, so their float32 weights keep the residual
    stream in float32), and any weight shared with another module (a head tied to the embeddings).
    """
    owners: dict[int, list[tuple[str, torch.nn.Module]]] = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append((name, module))

    def castable(param: torch.nn.Parameter | None) -> bool:
        return (param is not None and not param.requires_grad and param.dtype == torch.float32
                and all(type(module) is torch.nn.Linear and not _in_lora(name) for name, module in owners[id(param)]))

    freed = 0
    seen: set[int] = set()
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        for param in (module.weight, module.bias):
            if castable(param) and id(param) not in seen:
                seen.add(id(param))
                freed += param.numel() * (param.element_size() - torch.empty((), dtype=dtype).element_size())
                param.data = param.data.to(dtype)
    return freed


def share_input_casts(model: torch.nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward pre-hooks that round a float32 input once per tensor for every layer that reads it; returns them.

    On every LoRA-wrapped Linear and every other plain ``nn.Linear`` except the output embeddings (whose input is
    read once) and the modules inside those wrappers: under autocast (``torch.is_autocast_enabled``), a float32
    input ``x`` becomes ``x.to(autocast dtype)``, cached per thread and per tensor (weakly: the entry goes with
    ``x``), so q, k and v (and their LoRA factors) share one 16-bit copy of the norm's output. Outside autocast the
    hooks do nothing. The cached copy is a differentiable cast of ``x``: gradients reach ``x`` as before.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    local = threading.local()

    @torch.compiler.disable  # opaque to the compiler (a per-thread cache); compiled layers go without these hooks
    def shared_cast(module: torch.nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or not torch.is_autocast_enabled(x.device.type):
            return None
        cache = getattr(local, "cache", None)
        if cache is None:
            cache = local.cache = WeakIdKeyDictionary()
        dtype = torch.get_autocast_dtype(x.device.type)
        cast = cache.get(x)
        if cast is None or cast.dtype != dtype:
            cast = cache[x] = x.to(dtype)
        return (cast, *args[1:])

    inside: set[int] = set()  # modules of a LoRA wrapper (its base layer, its factors): they get the shared copy
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            inside.update(id(m) for m in module.modules() if m is not module)
    handles = []
    for name, module in model.named_modules():
        wrapped = isinstance(module, BaseTunerLayer) and isinstance(module.get_base_layer(), torch.nn.Linear)
        plain = type(module) is torch.nn.Linear and id(module) not in inside and module is not head
        if (wrapped or plain) and not _in_lora(name):
            handles.append(module.register_forward_pre_hook(shared_cast))
    return handles


def _in_lora(name: str) -> bool:
    """Whether a module name is inside LoRA's factors (``...q_proj.lora_A.default``)."""
    return any(part.startswith("lora_") for part in name.split("."))
