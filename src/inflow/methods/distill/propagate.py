"""Propagation of landmark values to every row by kernel ridge regression (Influence Distillation, DESIGN §6).

With embeddings E ``[n, d]`` of all rows, the landmark rows' embeddings E_L ``[L, d]`` and their exact values
P_L ``[L, m]`` (one column per target row or task), every row's value is predicted as

    P ≈ K(E, E_L) · α,    α = (K(E_L, E_L) + λ I)⁻¹ P_L

with an RBF kernel k(x, y) = exp(−‖x − y‖² / (2σ²)) whose bandwidth σ is the median distance between distinct
landmarks (the median heuristic), or the linear kernel k(x, y) = ⟨x, y⟩. The L×L system is factorised once
(Cholesky) and solved for all m columns together; rows are then streamed in chunks, so memory is
O(L² + chunk · L), never n × L.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Kernel = Literal["rbf", "linear"]


def median_bandwidth(landmarks: Tensor) -> float:
    """σ of the median heuristic: the median Euclidean distance over distinct pairs of rows of ``landmarks``
    ``[L, d]`` (L ≥ 2). Raises ``ValueError`` when every landmark is the same point."""
    if landmarks.shape[0] < 2:
        raise ValueError("the median bandwidth needs at least 2 landmarks")
    dist = torch.cdist(landmarks, landmarks)
    upper = dist[torch.triu(torch.ones_like(dist, dtype=torch.bool), diagonal=1)]
    sigma = float(upper.median())
    if sigma <= 0:
        raise ValueError("the landmarks' embeddings are (mostly) identical: the RBF bandwidth would be 0; use "
                         "kernel linear or more diverse landmarks")
    return sigma


def kernel_matrix(x: Tensor, y: Tensor, kernel: Kernel, sigma: float = 1.0) -> Tensor:
    """K(x, y) ``[a, b]`` for rows ``x [a, d]``, ``y [b, d]``: RBF with bandwidth ``sigma`` or linear."""
    if kernel == "linear":
        return x @ y.T
    if kernel == "rbf":
        return torch.exp(-torch.cdist(x, y).square() / (2.0 * sigma * sigma))
    raise ValueError(f"unknown kernel {kernel!r}: use rbf or linear (distill.kernel)")


@dataclass(frozen=True)
class KernelRidge:
    """A fitted propagation: the landmarks, the kernel with its bandwidth, and the weights α ``[L, m]``."""

    landmarks: Tensor  # [L, d]
    alpha: Tensor  # [L, m]
    kernel: Kernel
    sigma: float

    def predict(self, rows: Tensor) -> Tensor:
        """Predicted values ``[r, m]`` of ``rows [r, d]``: K(rows, E_L) α."""
        return kernel_matrix(rows.to(self.landmarks.dtype), self.landmarks, self.kernel, self.sigma) @ self.alpha

    def predict_chunks(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """:meth:`predict` over a stream of row chunks (e.g. a store read chunk by chunk)."""
        for chunk in chunks:
            yield self.predict(chunk)


def fit_kernel_ridge(landmarks: Tensor, values: Tensor, damping: float, kernel: Kernel = "rbf",
                     sigma: float | None = None) -> KernelRidge:
    """Solve (K(E_L, E_L) + λ I) α = P_L once for every column of ``values [L, m]`` (or ``[L]``).

    ``damping`` λ > 0 keeps the system well posed (landmarks may repeat, the linear kernel is low rank);
    ``sigma`` defaults to :func:`median_bandwidth`. Computed in float64 (L is thousands at most).
    """
    if damping <= 0:
        raise ValueError(f"distill.damping must be positive, got {damping}")
    if landmarks.shape[0] != values.shape[0]:
        raise ValueError(f"{landmarks.shape[0]} landmark embeddings for {values.shape[0]} landmark values")
    e_l = landmarks.to(torch.float64)
    p_l = values.to(torch.float64)
    if p_l.dim() == 1:
        p_l = p_l[:, None]
    width = (median_bandwidth(e_l) if sigma is None else float(sigma)) if kernel == "rbf" else 1.0
    gram = kernel_matrix(e_l, e_l, kernel, width)
    gram.diagonal().add_(damping)
    factor = torch.linalg.cholesky(gram)
    alpha = torch.cholesky_solve(p_l, factor)
    return KernelRidge(e_l, alpha, kernel, width)
