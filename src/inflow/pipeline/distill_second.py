"""Influence Distillation's second order, on landmark stores (DESIGN §6; the maths in ``methods/distill/weights``).

For target task t, with Φ_L ``[L, d]`` the landmarks' (sketched) features Γ = a ⊙ g (Adam) or g (SGD):

* the landmarks stage also stores U_t = P H_t Γ_j for every landmark j (the Hessian of t's loss applied to each
  feature, by batched Hessian-vector products, then the same sketch P): a features job with ``hvp_task = t``, so
  it is chunked, resumable and identity-checked like every store; and, for Adam, the sketched drift term
  P H_t b (one Hessian-vector product; :func:`write_drift`);
* the distill stage forms the landmark block M_t = (1/n) · sym(Φ_L U_tᵀ) ≈ (1/n) Γ_L H_t Γ_Lᵀ (JL keeps the inner
  products of P Γ_i with P H_t Γ_j), the first-order term p = Γ (ḡ_t − η H_t b) at the landmarks, propagates p and
  the landmark coefficients C = K(E, E_L)(K_LL + λI)⁻¹ to every row (exact rows at the landmarks), and solves
  the QP with Q = C M_t Cᵀ in its lifted form (memory O(nL), never n × n).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from inflow.config import DistillConfig
from inflow.errors import InflowError
from inflow.files import atomic_path
from inflow.gradients.blocks import lora_parameters
from inflow.methods.distill import (
    KernelRidge,
    adam_drift,
    second_order_weights,
    target_hvp,
)
from inflow.paths import DISTILL
from inflow.pipeline.feature_jobs import FeatureJob
from inflow.pipeline.stores import _context
from inflow.store import GradientStore
from inflow.store.attrs import require_pairing
from inflow.training.checkpoint import checkpoint_mean_lr


def hvp_store_path(task: str, checkpoint: str) -> Path:
    """``data/distill/hvp/<task>/<checkpoint>.zarr``: P H_t Γ of every landmark."""
    return DISTILL / "hvp" / task / f"{checkpoint}.zarr"


def drift_path(task: str, checkpoint: str) -> Path:
    """``data/distill/hvp/<task>/<checkpoint>.drift.npy``: P H_t b, Adam's drift term (``[d]`` float64)."""
    return DISTILL / "hvp" / task / f"{checkpoint}.drift.npy"


def hvp_jobs(landmarks: FeatureJob, tasks: list[str]) -> list[FeatureJob]:
    """One Hessian-vector store job per target task over the landmark rows of ``landmarks``."""
    checkpoint = Path(landmarks.checkpoint).name
    return [dataclasses.replace(landmarks, hvp_task=task, store=str(hvp_store_path(task, checkpoint)))
            for task in tasks]


def write_drift(job: FeatureJob) -> np.ndarray:
    """P H_t b for the job's task (Adam only: b is the step's momentum and weight-decay part, DESIGN §6), saved
    at :func:`drift_path`; zeros for plain gradients (no momentum)."""
    ctx = _context(job)
    out = np.zeros(ctx.sketch.out_dim)
    if ctx.adam is not None:
        a = ctx.adam
        theta = torch.cat([p.detach().reshape(-1) for _, p in lora_parameters(ctx.model)]).float()
        b = adam_drift(a.exp_avg.float(), a.exp_avg_sq.float(), a.step, a.beta1, a.beta2, a.eps, a.weight_decay,
                       theta)
        out = ctx.sketch.project(target_hvp(ctx.model, ctx.hvp_batches, b[None]).float())[0].double().numpy()
    path = drift_path(job.hvp_task, Path(job.checkpoint).name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # rewritten every run inside the persisted data/distill: never through a link
        np.save(tmp, out)
    return out


def step_size(distill: DistillConfig, checkpoint: Path) -> float:
    """η: ``distill.eta``, else the mean learning rate of the epoch that ends at ``checkpoint``."""
    return distill.eta if distill.eta > 0 else checkpoint_mean_lr(checkpoint)


def propagation_coefficients(ridge: KernelRidge, embeddings, landmark_rows: np.ndarray, n: int) -> np.ndarray:
    """C ``[n, L]``: row i holds the weights by which kernel ridge regression combines landmark values into row
    i's prediction (``ridge`` fitted to the identity), streamed over ``embeddings`` (an iterable of raw chunks);
    landmark rows are exact (unit rows)."""
    coefficients = np.concatenate([ridge.predict(torch.from_numpy(chunk)).numpy() for chunk in embeddings])
    assert coefficients.shape == (n, len(landmark_rows))
    coefficients[landmark_rows] = np.eye(len(landmark_rows))
    return coefficients


def second_order_task(marks: GradientStore, phi: np.ndarray, target_mean: np.ndarray, task: str, ridge: KernelRidge,
                      coefficients: np.ndarray, distill: DistillConfig, eta: float) -> dict:
    """The second-order weights of one task.

    ``marks`` the landmark store and ``phi [L, d]`` its raw features, ``target_mean [d]`` the task's mean target
    gradient ḡ_t, ``coefficients [n, L]`` the propagation coefficients C (exact unit rows at the landmarks). Returns
    ``weights [n]``, ``p [n]`` and the solver's report.
    """
    n = coefficients.shape[0]
    checkpoint = marks.attrs.checkpoint
    store = GradientStore.open(hvp_store_path(task, checkpoint))
    require_pairing(marks.attrs, store.attrs, marks.path, store.path)
    if store.example_ids() != marks.example_ids():
        raise InflowError(f"{store.path} holds other rows than the landmark store {marks.path}: rerun the landmarks "
                          "stage (dvc repro landmarks)")
    hvp = store.read_all(raw=True).astype(np.float64)  # [L, d]
    block = phi @ hvp.T / n  # (1/n) Γ_i · H Γ_j
    drift = np.load(drift_path(task, checkpoint))
    p_landmarks = phi @ (target_mean - eta * drift)  # [L]
    p = coefficients @ p_landmarks  # propagated (C is the kernel ridge map; exact at the landmarks)
    rms = float(np.sqrt(np.mean(p ** 2))) or 1.0
    solution = second_order_weights(p, block, coefficients, eta=eta, damping=distill.qp_damping * rms, total=n)
    return {"weights": solution.weights, "p": p,
            "report": {"status": solution.status, "clipped": solution.clipped, "objective": solution.objective,
                       "support": int(np.count_nonzero(solution.weights > 1e-9 * n)), "eta": eta,
                       "sigma": ridge.sigma}}
