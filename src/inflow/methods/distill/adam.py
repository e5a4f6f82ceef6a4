"""Adam's next update as an affine map of the weighted source gradient (Influence Distillation, DESIGN §6).

One AdamW step from an optimizer state at completed step t (moments m, v ``[D]``, parameters θ ``[D]``) on the
weighted source loss, whose gradient is ḡ = G_Sᵀ w / n, is, with the second moment v held fixed (frozen),

    θ' = θ − η (a ⊙ ḡ + b)
    a = (1 − β1) / (1 − β1^{t+1}) / (√(v / (1 − β2^{t+1})) + ε)                       (:func:`adam_preconditioner`)
    b = β1 m / (1 − β1^{t+1}) / (√(v / (1 − β2^{t+1})) + ε) + wd · θ                   (:func:`adam_drift`)

since torch's AdamW sets m' = β1 m + (1 − β1) ḡ and θ' = θ (1 − η wd) − η m' / (1 − β1^{t+1}) / denominator.
The step itself also updates v to β2 v + (1 − β2) ḡ²; freezing v (it depends on w only through ḡ²) is the
approximation that makes the update affine in w. Passing that updated v as ``exp_avg_sq`` makes the formulas exact
for one given gradient. With them the first- and second-order influence terms become
p = G_S diag(a)(g_T − η H_T b) and Q = (1/n) G_S diag(a) H_T diag(a) G_Sᵀ; a ≡ 1, b ≡ 0 is plain gradient descent.

Both functions take the tensors of ``torch.optim.AdamW.state[param]`` flattened in LoRA order and compute in
float64 when any input is float64, else float32.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def adam_preconditioner(exp_avg_sq: Tensor, step: int, beta1: float, beta2: float, eps: float) -> Tensor:
    """The elementwise gain a ``[D]`` of the next Adam step on the gradient:

        a = (1 − β1) / (1 − β1^{t+1}) / (√(v / (1 − β2^{t+1})) + ε)

    ``exp_avg_sq`` v ``[D]`` (non-negative), ``step`` t the optimizer's completed step count (``state["step"]``),
    ``beta1``, ``beta2`` in [0, 1), ``eps`` ε ≥ 0. At t = 0 (no state yet, v = 0) a = 1/ε: the frozen-v
    approximation does not describe Adam's first, sign-like step, so take the state after a warmup.
    """
    _check_hyper(step, beta1, beta2, eps)
    dtype = _dtype(exp_avg_sq)
    denominator = _denominator(_check_vector(exp_avg_sq, "exp_avg_sq", None).to(dtype), step, beta2, eps)
    return (1.0 - beta1) / (1.0 - beta1 ** (step + 1)) / denominator


def adam_drift(exp_avg: Tensor, exp_avg_sq: Tensor, step: int, beta1: float, beta2: float, eps: float,
               weight_decay: float = 0.0, params: Tensor | None = None) -> Tensor:
    """The part b ``[D]`` of the next Adam step that does not depend on the new gradient:

        b = β1 m / (1 − β1^{t+1}) / (√(v / (1 − β2^{t+1})) + ε) + wd · θ

    the momentum carried over (``exp_avg`` m ``[D]``) plus AdamW's decoupled weight decay (``weight_decay`` wd ≥ 0
    on ``params`` θ ``[D]``, required when wd > 0). Other arguments as in :func:`adam_preconditioner`.
    """
    _check_hyper(step, beta1, beta2, eps)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
    if weight_decay > 0 and params is None:
        raise ValueError(f"weight_decay is {weight_decay} but params is None: pass the flat LoRA parameters θ [D] "
                         "(the decay term is wd · θ), or weight_decay=0.0 if the optimizer had none")
    size = _check_vector(exp_avg_sq, "exp_avg_sq", None).shape[0]
    _check_vector(exp_avg, "exp_avg", size)
    inputs = [exp_avg, exp_avg_sq] + ([] if params is None else [_check_vector(params, "params", size)])
    dtype = _dtype(*inputs)
    denominator = _denominator(exp_avg_sq.to(dtype), step, beta2, eps)
    drift = beta1 * exp_avg.to(dtype) / (1.0 - beta1 ** (step + 1)) / denominator
    if weight_decay > 0:
        assert params is not None  # checked above
        drift = drift + weight_decay * params.to(dtype)
    return drift


def _denominator(exp_avg_sq: Tensor, step: int, beta2: float, eps: float) -> Tensor:
    """√(v / (1 − β2^{t+1})) + ε ``[D]``; refuses zeros (v = 0 with ε = 0), which would make a and b infinite."""
    denominator = torch.sqrt(exp_avg_sq / (1.0 - beta2 ** (step + 1))) + eps
    if bool((denominator == 0).any()):
        raise ValueError("exp_avg_sq has zeros and eps is 0: Adam's step would divide by zero there; pass the "
                         "optimizer's eps (> 0) or a state whose second moment is positive")
    return denominator


def _dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_vector(vector: Tensor, name: str, size: int | None) -> Tensor:
    """A flat ``[D]`` state tensor of the expected size (``size`` None: any), finite, v non-negative."""
    if vector.dim() != 1:
        raise ValueError(f"{name} must be a flat [D] tensor (flatten the per-parameter optimizer state in LoRA "
                         f"order), got shape {tuple(vector.shape)}")
    if size is not None and vector.shape[0] != size:
        raise ValueError(f"{name} has {vector.shape[0]} entries but exp_avg_sq has {size}: flatten every state "
                         "tensor over the same parameters in the same order")
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"{name} has non-finite entries: the optimizer state is corrupt (diverged training?)")
    if name == "exp_avg_sq" and bool((vector < 0).any()):
        raise ValueError("exp_avg_sq has negative entries; it must be Adam's second moment (state['exp_avg_sq'])")
    return vector


def _check_hyper(step: int, beta1: float, beta2: float, eps: float) -> None:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be the optimizer's completed step count (an int ≥ 0), got {step!r}; "
                         "use int(state['step'])")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
