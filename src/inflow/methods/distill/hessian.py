"""Gradient and Hessian-vector products of the target loss over the LoRA parameters (Influence Distillation,
DESIGN §6).

The target loss is the mean per-example loss over every target row, whatever batch it sits in,

    L_T(θ) = (1/N) Σ_r ℓ_r(θ),    ℓ_r = :func:`~inflow.gradients.per_example.example_losses` of row r,

over θ = :func:`~inflow.gradients.blocks.lora_parameters` flattened in that order (D entries). The second-order
influence term needs H_T = ∇²L_T(θ) only through products H_T v: :func:`target_hvp` takes them by double backward
(g = ∂L_T/∂θ built with ``create_graph=True``, then H_T v = ∂⟨g, v⟩/∂θ), batched over the k vectors with one
vmapped backward (``is_grads_batched``) per batch of rows and chunk of vectors — never one row at a time. Memory of
that backward grows with the chunk: lower ``chunk_size`` when k is large.

Fused attention kernels (SDPA's flash and memory-efficient ones) have no second derivative, so both functions run
SDPA on its math backend (a composite of matmuls and a softmax). Models loaded with
``attn_implementation="flash_attention_2"`` are refused; load them with ``"sdpa"`` or ``"eager"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from inflow.errors import InflowError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.losses import scored_losses

_BATCH_KEYS = ("input_ids", "attention_mask", "labels")


def target_gradient(model: nn.Module, batches: Sequence[Mapping[str, Tensor]]) -> Tensor:
    """g_T = ∇L_T(θ) ``[D]``: the gradient of the mean example loss over all rows of ``batches``.

    Each batch holds ``input_ids``, ``attention_mask``, ``labels`` ``[B, T]`` (labels −100 outside answers);
    every row weighs 1/N, N the total row count. The model runs in eval mode (dropout off) and each module's mode
    is restored afterwards; parameters' ``.grad`` is untouched. Dtype: the LoRA weights' dtype, at least float32;
    device: the model's.
    """
    params, dtype = _trainable(model)
    rows = _count_rows(batches)
    total = torch.zeros(sum(p.numel() for p in params), dtype=dtype, device=params[0].device)
    with _differentiation_mode(model, second_order=False):
        for batch in batches:
            loss = _loss_sum(model, batch, params[0].device) / rows
            total += _flatten(torch.autograd.grad(loss, params, allow_unused=True), params, dtype)
    return total


def target_hvp(model: nn.Module, batches: Sequence[Mapping[str, Tensor]], vectors: Tensor,
               chunk_size: int | None = None) -> Tensor:
    """H_T v_j for every row v_j of ``vectors [k, D]``: ``[k, D]``, H_T = ∇²L_T(θ) (see the module docstring).

    Per batch b, H_T v = Σ_b ∂⟨∇(S_b / N), v⟩/∂θ with S_b the batch's summed example losses, so rows are weighted
    equally across batches of any size. ``chunk_size`` vectors (default: all k) share one vmapped backward.
    Eval mode, dtype and device as in :func:`target_gradient`.
    """
    params, dtype = _trainable(model)
    dim = sum(p.numel() for p in params)
    if vectors.dim() != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must be [k, D] with D = {dim} (the flat LoRA parameter count), got "
                         f"{tuple(vectors.shape)}")
    k = vectors.shape[0]
    chunk = k if chunk_size is None else chunk_size
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive int (or None for all vectors at once), got {chunk_size}")
    rows = _count_rows(batches)
    vectors = vectors.to(device=params[0].device, dtype=dtype)
    total = torch.zeros((k, dim), dtype=dtype, device=params[0].device)
    if k == 0:
        return total
    with _differentiation_mode(model, second_order=True):
        for batch in batches:
            loss = _loss_sum(model, batch, params[0].device) / rows
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            flat = _flatten(grads, params, dtype)
            if not flat.requires_grad:  # the loss is linear in θ on this batch: its Hessian is zero
                continue
            for start in range(0, k, chunk):
                part = vectors[start:start + chunk]
                total[start:start + part.shape[0]] += _batched_vjp(flat, params, part, dtype)
    return total


def _batched_vjp(flat: Tensor, params: list[nn.Parameter], vectors: Tensor, dtype: torch.dtype) -> Tensor:
    """∂⟨flat, v_j⟩/∂θ for every row of ``vectors [c, D]`` in one vmapped backward: ``[c, D]``."""
    try:
        found = torch.autograd.grad(flat, params, grad_outputs=vectors, retain_graph=True, allow_unused=True,
                                    is_grads_batched=True)
    except RuntimeError as error:
        if "derivative for" in str(error) and "not implemented" in str(error):
            raise InflowError(f"the model uses an operation without a second derivative ({error}); load it with "
                              "attn_implementation='sdpa' or 'eager' (fused attention kernels such as flash "
                              "attention cannot be differentiated twice)") from error
        raise
    pieces = [torch.zeros((vectors.shape[0], p.numel()), dtype=dtype, device=p.device) if g is None
              else g.reshape(vectors.shape[0], -1).to(dtype) for g, p in zip(found, params)]
    return torch.cat(pieces, dim=1)


def _flatten(grads: Sequence[Tensor | None], params: list[nn.Parameter], dtype: torch.dtype) -> Tensor:
    """Concatenate per-parameter gradients into ``[D]`` in LoRA order (zeros for parameters the loss skips)."""
    return torch.cat([torch.zeros(p.numel(), dtype=dtype, device=p.device) if g is None
                      else g.reshape(-1).to(dtype) for g, p in zip(grads, params)])


def _loss_sum(model: nn.Module, batch: Mapping[str, Tensor], device: torch.device) -> Tensor:
    """Σ of the example losses of one batch (a differentiable scalar), its tensors moved to ``device``; the LM head
    runs on answer tokens only, its logits kept for the second derivative (no recomputation)."""
    input_ids, attention_mask, labels = (batch[key].to(device) for key in _BATCH_KEYS)
    return scored_losses(model, input_ids, attention_mask, labels, recompute=False).sum()


def _count_rows(batches: Sequence[Mapping[str, Tensor]]) -> int:
    """N, the number of target rows over all batches, after checking every batch's keys and shapes."""
    if len(batches) == 0:
        raise ValueError("no target batches: pass at least one batch of target rows")
    rows = 0
    for index, batch in enumerate(batches):
        missing = [key for key in _BATCH_KEYS if key not in batch]
        if missing:
            raise ValueError(f"target batch {index} lacks {missing}; build batches with inflow.data.batching.collate")
        shapes = {key: tuple(batch[key].shape) for key in _BATCH_KEYS}
        if len(set(shapes.values())) != 1 or len(shapes["input_ids"]) != 2:
            raise ValueError(f"target batch {index}: input_ids, attention_mask and labels must all be [B, T], "
                             f"got {shapes}")
        rows += shapes["input_ids"][0]
    if rows == 0:
        raise ValueError("the target batches hold no rows")
    return rows


def _trainable(model: nn.Module) -> tuple[list[nn.Parameter], torch.dtype]:
    """The LoRA parameters in flat order and the accumulation dtype (theirs, at least float32)."""
    params = [p for _, p in lora_parameters(model)]
    if not params:
        raise InflowError("the model has no trainable parameters; wrap it with LoRA "
                          "(inflow.models.loading.apply_lora) or load an adapter with is_trainable=True")
    return params, torch.promote_types(params[0].dtype, torch.float32)



@contextmanager
def _differentiation_mode(model: nn.Module, second_order: bool) -> Iterator[None]:
    """Eval mode (dropout off, each module's own flag restored after), gradients on, SDPA on its math backend.

    For second derivatives, attention implementations other than sdpa/eager are refused up front: a fused kernel
    whose backward is not itself differentiable would silently drop Hessian terms rather than fail.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attention = getattr(getattr(base, "config", None), "_attn_implementation", None)
    if second_order and attention is not None and attention not in ("sdpa", "eager"):
        raise InflowError(f"the model uses attn_implementation={attention!r}, which has no second derivative; "
                          "load it with attn_implementation='sdpa' or 'eager' for target Hessian products")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for module, mode in modes:
            module.training = mode
