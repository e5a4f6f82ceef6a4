"""Per-example losses and per-example LoRA gradients.

- :func:`example_losses` is the one loss every module uses: the mean next-token cross-entropy over an
  example's answer tokens.
- :func:`per_example_grads` is the fast path: one forward and one backward for the whole batch. Hooks
  on every LoRA ``lora_A`` / ``lora_B`` Linear record the layer input x and the gradient of its output;
  a Linear's weight gradient is an outer product summed over tokens, so the per-example gradient is
  that sum restricted to one example's tokens.
- :func:`per_example_grads_loop` is the reference: one forward/backward per example, unpadded. Tests
  and benchmarks compare the two; nothing else should call it.

Use :func:`per_example_grads` for extraction. It supports any set of LoRA target modules that are
``nn.Linear`` (vanilla LoRA); DoRA and other peft LoRA variants, LoRA on embeddings/convolutions and
``modules_to_save`` are refused with an explanation.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch

from inflow.errors import InflowError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.checkpointing import checkpointed_modules
from inflow.gradients.losses import (  # re-exported: where callers have always found them
    IGNORE,
    aligned_losses,
    answer_positions,
    example_losses,
    scored_losses,
)
from inflow.gradients.sinks import clear_sinks, set_sinks, sink_modules
from inflow.profiling import region

log = logging.getLogger(__name__)

__all__ = ["IGNORE", "aligned_losses", "answer_positions", "example_losses", "lora_linears", "per_example_grads",
           "per_example_grads_loop", "scored_losses"]

_LORA_FACTORS = ("lora_A", "lora_B")
# Hooks live on the model's modules, and concurrent calls on one model (one batch per CPU core) must neither see
# each other's forwards nor add or remove hooks while another thread's forward walks them. So while any call is
# active on a model, each of its LoRA Linears carries one dispatching hook, added by the first call and removed by
# the last; a forward is routed to the call of the thread that runs it (_ROUTES: thread id -> {module id: callback}).
# Eval mode is switched on by the first call and restored by the last too.
# During a call's backward, the modules whose recomputed forward it captures (_RECOMPUTES: thread id -> {module id:
# callback}; see _route_recompute).
_ACTIVE: weakref.WeakKeyDictionary[torch.nn.Module, _Active] = weakref.WeakKeyDictionary()
_ACTIVE_GUARD = threading.Lock()
_ROUTES: dict[int, dict[int, Callable[[tuple, torch.Tensor], None]]] = {}
_RECOMPUTES: dict[int, dict[int, Callable[[tuple], None]]] = {}
_SINK_GUARD = threading.Lock()  # gradient passes through sinks (inflow.gradients.sinks) run one at a time


class _Active:
    """What the calls active on one model share: their count, the hooks, and the train flags to restore."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.count = 0
        self.handles: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.modes = [(module, module.training) for module in model.modules()]


@torch.compiler.disable  # opaque to the compiler (thread ids, closures): a graph break, should it meet one
def _route_recompute(module: torch.nn.Module, args: tuple) -> None:
    """The forward pre-hook of a checkpointed layer's LoRA factor: hands the input of its recomputed forward to the
    call in its backward. A CPU recomputes on the thread that called the backward; a GPU on autograd's own device
    thread, where the one call in its backward is the one (a GPU runs one batch at a time). A pre-hook, as the
    recompute stops once the layer's saved tensors are rebuilt, which can be inside a module."""
    thread = threading.get_ident()
    routes = _RECOMPUTES.get(thread)
    if routes is None and thread not in _ROUTES:  # not a thread running a call: autograd's device thread
        waiting = list(_RECOMPUTES.values())  # (one step: other threads may add or remove theirs meanwhile)
        routes = waiting[0] if len(waiting) == 1 else None
    callback = (routes or {}).get(id(module))
    if callback is not None:
        callback(args)


@torch.compiler.disable  # opaque to the compiler (thread ids, closures): a graph break, should it meet one
def _route(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
    """The one forward hook: hands the forward to the active call of the thread running it, if any."""
    callback = _ROUTES.get(threading.get_ident(), {}).get(id(module))
    if callback is not None:
        callback(args, out)


def per_example_grads(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], *,
                      causal_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example LoRA gradients ``[B, D]`` and losses ``[B]`` from one forward and one backward.

    For a LoRA factor y = x W^T (W ``[out, in]``) the gradient of L = sum_b loss_b is
    dL/dW = sum_{b,t} go[b,t]^T x[b,t], with go = dL/dy ``[B, T, out]`` and x ``[B, T, in]``. Examples
    do not interact (each row is its own sequence), so dL/dy[b] = d loss_b / dy[b] and
    g_b(W) = sum_t go[b,t]^T x[b,t] = (go[b]^T @ x[b]) ``[out, in]``: one batched matmul per layer call.
    Right padding is inert: with causal attention a padded position only feeds later padded positions,
    and its labels are -100, so its go is exactly zero. That makes the padding mask redundant for the result:
    ``causal_only`` drops it, so SDPA can take its causal (flash) kernel; the features stage does so on a GPU
    (:func:`~inflow.gradients.losses.scored_losses`).

    Thread-safe, and concurrent: calls on the same model from several threads run at once (each call's hooks
    record only its own thread's forward), so a CPU can run one batch per core at one intra-op thread each.
    Rows are flattened in :func:`~inflow.gradients.blocks.lora_parameters` order. The model runs in eval
    mode (dropout off) and every module's train/eval flag is restored afterwards; parameter ``.grad``
    is left untouched. Output dtype: the LoRA weights' dtype, at least float32; device: the model's.
    The result is exact for the forward pass it differentiates; note that HF's eager attention takes its
    softmax in float32 even in float64 models, so padded and unpadded runs of one example agree to ~1e-7
    there (SDPA keeps float64).
    """
    params = lora_parameters(model)
    modules = lora_linears(model, params)
    input_ids, attention_mask, labels = _check_batch(batch, params[0][1].device)
    n = input_ids.shape[0]
    acc_dtype = torch.promote_types(params[0][1].dtype, torch.float32)
    if sink_modules(model) is not None:  # compiled layers: gradient sinks instead of hooks
        return _sink_pass(model, params, modules, input_ids, attention_mask, labels, causal_only)
    grads: dict[int, torch.Tensor] = {}  # id(parameter) -> [B, *shape]
    calls = {name: 0 for name, _ in modules}

    # In a checkpointed layer a factor's input is taken from the forward recomputed in the backward, not held from
    # the first: the layer keeps only its own input meanwhile. The recompute runs when the backward first needs one
    # of the layer's saved tensors, which can be after a factor's output gradient (a LoRA on down_proj gets it
    # straight through the residual add): input and gradient are paired in whichever order they come.
    recomputed = checkpointed_modules(model)  # (one walk of the model per call, not one per LoRA module)
    deferred = {id(m): name for name, m in modules if id(m) in recomputed}
    waiting: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {i: ([], []) for i in deferred}

    def product(module: torch.nn.Linear, x: torch.Tensor, grad_out: torch.Tensor) -> None:
        with region("outer_products"):
            _accumulate(module, x, grad_out, n, acc_dtype, grads)

    def on_forward(name: str, module: torch.nn.Linear) -> Callable[[tuple, torch.Tensor], None]:
        def record(args: tuple, out: torch.Tensor) -> None:
            calls[name] += 1
            if id(module) in deferred:
                if calls[name] > 1:
                    raise InflowError(f"{name} runs twice in a forward pass inside a checkpointed layer, so its "
                                      "recomputed inputs cannot be told apart; turn features.gradient_checkpointing "
                                      "off")
                xs, gos = waiting[id(module)]

                def on_grad(grad_out: torch.Tensor) -> None:  # its input comes, or came, with the recompute
                    if xs:
                        product(module, xs.pop(), grad_out)
                    else:
                        gos.append(grad_out)
            else:
                held = [args[0].detach()]  # freed as soon as this call's gradient has been used

                def on_grad(grad_out: torch.Tensor) -> None:
                    product(module, held.pop(), grad_out)

            out.register_hook(on_grad)  # lives on out's autograd node: out itself is freed when the forward is done
        return record

    def on_recompute(module: torch.nn.Linear) -> Callable[[tuple], None]:
        xs, gos = waiting[id(module)]

        def capture(args: tuple) -> None:
            x = args[0].detach()
            if gos:
                product(module, x, gos.pop())
            else:
                xs.append(x)
        return capture

    weights = [p for _, p in params]
    losses = _run_hooked(model, modules, on_forward, calls, weights, input_ids, attention_mask, labels, causal_only,
                         {id(m): on_recompute(m) for _, m in modules if id(m) in deferred})
    # a gradient left without its input is an error; an input left without a gradient is a zero gradient (a factor
    # whose output the loss ignores), as on the plain path
    unpaired = [deferred[i] for i, (_, gos) in waiting.items() if gos]
    if unpaired:
        raise InflowError(f"activation checkpointing: the forward recomputed in the backward did not pair with the "
                          f"gradients of {unpaired[:3]}; turn features.gradient_checkpointing off")
    flat = [grads.get(id(p), torch.zeros((n, *p.shape), dtype=acc_dtype, device=p.device)).reshape(n, -1)
            for _, p in params]
    return torch.cat(flat, dim=1), losses


def _run_hooked(model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]],
                on_forward: Callable[[str, torch.nn.Linear], Callable[..., None]], calls: dict[str, int],
                weights: list[torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, causal_only: bool,
                on_recompute: dict[int, Callable[[tuple], None]]) -> torch.Tensor:
    """One hooked forward and backward of the batch; returns the detached per-example losses ``[B]``.

    The backward asks for the LoRA weights' (summed) gradients, a small by-product, rather than for the LoRA
    outputs' gradients, which would keep every output alive until the backward; the per-example gradients come
    from the hooks on the way. Forwards recomputed during the backward (activation checkpointing) are not
    recorded again; the inputs of the modules in ``on_recompute`` (module id -> callback) are handed to it then."""
    thread = threading.get_ident()
    _ROUTES[thread] = {id(module): on_forward(name, module) for name, module in modules}
    recomputing = [m for _, m in modules if id(m) in on_recompute]
    try:
        with _eval_mode(model, modules, recomputing), torch.enable_grad():
            with region("forward"):  # the LM head on answer tokens only
                losses = scored_losses(model, input_ids, attention_mask, labels, causal_only=causal_only)
            idle = [name for name, count in calls.items() if count == 0]
            if idle:
                raise InflowError(f"LoRA modules {idle[:3]} did not run in the forward pass (merged or inactive "
                                  "adapter); unmerge the adapter and set it active before extracting gradients")
            _ROUTES[thread] = {}
            _RECOMPUTES[thread] = on_recompute
            with region("backward"):  # on a GPU the backward's own ops run on autograd's device thread
                torch.autograd.grad(losses.sum(), weights, allow_unused=True)
    finally:
        del _ROUTES[thread]
        _RECOMPUTES.pop(thread, None)
    return losses.detach()


def _sink_pass(model: torch.nn.Module, params: list[tuple[str, torch.nn.Parameter]],
               modules: list[tuple[str, torch.nn.Linear]], input_ids: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor, causal_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`per_example_grads` of a model with gradient sinks (:mod:`inflow.gradients.sinks`): the per-example
    gradients are autograd's gradients of the sinks. One pass at a time per process (the sinks sit on the modules)."""
    n = input_ids.shape[0]
    routed = sink_modules(model)
    with _SINK_GUARD:
        sinks = set_sinks(routed, n)
        try:
            with _eval_mode(model), torch.enable_grad():
                with region("forward"):  # the LM head on answer tokens only
                    losses = scored_losses(model, input_ids, attention_mask, labels, causal_only=causal_only)
                with region("backward"):  # (no factor ran, no sink to differentiate: every one idle)
                    found = (torch.autograd.grad(losses.sum(), sinks, allow_unused=True) if losses.requires_grad
                             else [None] * len(sinks))
        finally:
            clear_sinks(routed)
    by_weight = {id(m.weight): g for m, g in zip(routed, found)}
    idle = [name for name, m in modules if by_weight.get(id(m.weight)) is None]
    if idle:
        raise InflowError(f"LoRA modules {idle[:3]} did not run in the forward pass (merged or inactive "
                          "adapter); unmerge the adapter and set it active before extracting gradients")
    return torch.cat([by_weight[id(p)].reshape(n, -1) for _, p in params], dim=1), losses.detach()


def per_example_grads_loop(model: torch.nn.Module,
                           batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`per_example_grads`: one unpadded forward/backward per example.

    Row b is cut to its ``attention_mask`` length and g_b = torch.autograd.grad(loss_b, LoRA params).
    Same output shapes ``[B, D]``, ``[B]``, eval mode, and dtype as the fast path. Slow: tests only.
    """
    params = lora_parameters(model)
    if not params:
        raise InflowError("the model has no trainable parameters; wrap it with LoRA first")
    input_ids, attention_mask, labels = _check_batch(batch, params[0][1].device)
    acc_dtype = torch.promote_types(params[0][1].dtype, torch.float32)
    rows, losses = [], []
    with _eval_mode(model), torch.enable_grad():
        for b in range(input_ids.shape[0]):
            length = int(attention_mask[b].sum())
            logits = model(input_ids=input_ids[b:b + 1, :length], attention_mask=attention_mask[b:b + 1, :length],
                           use_cache=False).logits
            loss = example_losses(logits, labels[b:b + 1, :length])[0]
            found = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).to(acc_dtype)
                                   for g, (_, p) in zip(found, params)]))
            losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


def _accumulate(module: torch.nn.Linear, x: torch.Tensor, grad_out: torch.Tensor, n: int,
                dtype: torch.dtype, grads: dict[int, torch.Tensor]) -> None:
    """Add this call's per-example weight (and bias) gradients: g_b(W) += go[b]^T @ x[b] ``[out, in]``, in ``dtype``.

    Outside autocast the product runs in ``dtype`` (float32 at least). Under autocast (the backward runs in the
    forward's autocast state, hooks included) it runs in the autocast dtype, as the forward's own products do: the
    matmul accumulates in float32 and rounds its result to 16 bits, which is then widened to ``dtype``, where sums
    over a layer's calls are taken. Inputs are not widened first: autocast would round them straight back."""
    if x.shape[0] != n or grad_out.shape[0] != n:
        raise InflowError(f"a LoRA layer saw activations of shape {tuple(x.shape)} whose first axis is not the "
                          f"batch ({n}); per-example gradients need [B, ..., features] activations")
    x = x.reshape(n, -1, x.shape[-1])
    go = grad_out.reshape(n, -1, grad_out.shape[-1])
    if not torch.is_autocast_enabled(x.device.type):
        x, go = x.to(dtype), go.to(dtype)
    pieces = [(module.weight, torch.bmm(go.transpose(1, 2), x).to(dtype))]  # [B, out, in]
    if module.bias is not None and module.bias.requires_grad:
        pieces.append((module.bias, go.to(dtype).sum(dim=1)))  # [B, out]
    for param, grad in pieces:
        key = id(param)
        grads[key] = grad if key not in grads else grads[key] + grad


def lora_linears(model: torch.nn.Module,
                 params: list[tuple[str, torch.nn.Parameter]]) -> list[tuple[str, torch.nn.Linear]]:
    """The trainable LoRA factor Linears (``params``: :func:`~inflow.gradients.blocks.lora_parameters`), the modules
    :func:`per_example_grads` hooks; refuses anything whose gradient the hooks would miss."""
    if not params:
        raise InflowError("the model has no trainable parameters; wrap it with LoRA "
                          "(inflow.models.loading.apply_lora) or load an adapter with is_trainable=True")
    dora = [name for name, _ in params if "lora_magnitude_vector" in name]
    if dora:
        raise InflowError(f"DoRA adapters (use_dora=True, e.g. {dora[0]}) are not supported: per-example "
                          "gradients are exact only for vanilla LoRA; train the warmup without use_dora")
    found: list[tuple[str, torch.nn.Linear]] = []
    covered: set[int] = set()
    for name, module in model.named_modules():
        variants = getattr(module, "lora_variant", None)
        if variants:
            kinds = sorted({type(v).__name__ for v in variants.values()})
            raise InflowError(f"{name} uses the LoRA variant {kinds}, which is not supported; use vanilla LoRA "
                              "(no use_dora / alora / other variants) for gradient extraction")
        parts = name.split(".")
        if not (isinstance(module, torch.nn.Linear) and len(parts) >= 2 and parts[-2] in _LORA_FACTORS):
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            found.append((name, module))
            covered.update(id(p) for p in own)
    missing = [name for name, p in params if id(p) not in covered]
    if missing:
        raise InflowError(f"trainable parameters outside LoRA Linear layers: {missing[:5]}"
                          f"{' ...' if len(missing) > 5 else ''}; per-example gradients cover only lora_A/lora_B "
                          "Linear weights: drop modules_to_save and LoRA on embeddings/convolutions, or freeze "
                          "those parameters (requires_grad_(False))")
    return found


def _check_batch(batch: Mapping[str, torch.Tensor],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` ``[B, T]`` on ``device``, checked for right padding."""
    missing = [key for key in ("input_ids", "attention_mask", "labels") if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; build batches with inflow.data.batching.collate")
    input_ids, attention_mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape or labels.shape != input_ids.shape:
        raise ValueError(f"input_ids, attention_mask and labels must all be [B, T]; got {tuple(input_ids.shape)}, "
                         f"{tuple(attention_mask.shape)}, {tuple(labels.shape)}")
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        raise ValueError("attention_mask is not right-padded (a 0 before a 1); pad on the right as collate does")
    if bool(((attention_mask == 0) & (labels != IGNORE)).any()):
        raise ValueError("labels on padding positions must be -100; pad labels with -100 as collate does")
    return input_ids, attention_mask, labels


@contextmanager
def _eval_mode(model: torch.nn.Module, hooked: list[tuple[str, torch.nn.Linear]] = (),
               recomputing: list[torch.nn.Module] = ()) -> Iterator[None]:
    """Switch every submodule to eval (dropout off) and restore each one's own flag afterwards; meanwhile the
    ``hooked`` modules carry the routing hook (:func:`_route`), the ``recomputing`` ones the recompute's
    (:func:`_route_recompute`).

    Concurrent bodies on one model share both: the first saves the flags, the last restores them and removes the
    hooks. A hook is only ever added or removed under the guard, before the body's forward starts.
    """
    with _ACTIVE_GUARD:
        active = _ACTIVE.get(model)
        if active is None:
            active = _ACTIVE[model] = _Active(model)
            model.eval()
        for _name, module in hooked:
            if id(module) not in active.handles:
                active.handles[id(module)] = module.register_forward_hook(_route)
        for module in recomputing:
            if -id(module) not in active.handles:  # (keyed apart from the forward hook)
                active.handles[-id(module)] = module.register_forward_pre_hook(_route_recompute)
        active.count += 1
    try:
        yield
    finally:
        with _ACTIVE_GUARD:
            active.count -= 1
            if active.count == 0:
                del _ACTIVE[model]
                for handle in active.handles.values():
                    handle.remove()
                for module, mode in active.modes:
                    module.training = mode
