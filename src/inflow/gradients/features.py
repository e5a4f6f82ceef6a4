"""Gradient features Γ(z) (DESIGN §4): SGD features for target rows, Adam features for pool rows.

LESS scores a pool example z against a target example z' by cos(Γ_adam(z), Γ_sgd(z')): the pool side
is the update Adam would make from the checkpoint's state, the target side the plain gradient.
"""

from __future__ import annotations

import torch


def sgd_features(grads: torch.Tensor) -> torch.Tensor:
    """SGD feature Γ(z) = g(z): the per-example gradient itself, ``[B, D]`` in, same tensor out.

    Used for target (validation) rows, as LESS does (DESIGN §4).
    """
    return grads


def adam_features(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    eps_inside_sqrt: bool = True,
) -> torch.Tensor:
    """Adam feature of each row of ``grads [B, D]`` from a checkpoint's AdamW state ``exp_avg``, ``exp_avg_sq [D]``.

    One Adam step from the checkpoint's moments m, v on the example's gradient g:

        m' = β1·m + (1 − β1)·g
        v' = β2·v + (1 − β2)·g²
        Γ  = m' / √(v' + ε)        (``eps_inside_sqrt=True``, default: LESS's code, for parity)
        Γ  = m' / (√v' + ε)        (``eps_inside_sqrt=False``: the update torch's AdamW makes)

    Neither form bias-corrects m', v' (AdamW divides by 1 − β1^t and 1 − β2^t); LESS skips it and so
    do we. The corrections are one scalar for all coordinates, m̂/√v̂ = (m'/√v')·√(1 − β2^t)/(1 − β1^t),
    so cosine scores change only through ε's size relative to v' (after a short warmup, t ≪ 1/(1 − β2),
    uncorrected v' is several times smaller than v̂). ε inside the root matters only where v' ≲ ε
    (≈ 1e-8): there it caps 1/√(v'+ε) at 1/√ε ≈ 1e4 where the other form allows 1/ε = 1e8.
    Computed in ``grads``' dtype promoted with the states' dtype; result ``[B, D]``.
    """
    if grads.dim() != 2:
        raise ValueError(f"grads must be [B, D]; got shape {tuple(grads.shape)}")
    dim = grads.shape[1]
    for name, state in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if state.shape != (dim,):
            raise ValueError(f"{name} has shape {tuple(state.shape)} but the gradients have D = {dim}; load the "
                             "optimizer state with the same LoRA parameters (lora_parameters order) as the model")
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0 and eps >= 0.0):
        raise ValueError(f"Adam hyper-parameters out of range: beta1={beta1}, beta2={beta2}, eps={eps}")
    dtype = torch.promote_types(grads.dtype, exp_avg.dtype)
    g = grads.to(dtype)
    m = exp_avg.to(device=g.device, dtype=dtype)
    v = exp_avg_sq.to(device=g.device, dtype=dtype)
    m_new = beta1 * m + (1.0 - beta1) * g  # [B, D], m broadcast over rows
    v_new = beta2 * v + (1.0 - beta2) * g.square()
    if eps_inside_sqrt:
        return m_new / torch.sqrt(v_new + eps)
    return m_new / (torch.sqrt(v_new) + eps)
