"""Optimal per-row training weights from the second-order influence terms (Influence Distillation, DESIGN §6).

One step of size η on the w-weighted source loss changes the target loss by (η/n)[−pᵀw + (η/2) wᵀQw]
(p ``[n]`` first-order and Q ``[n, n]`` second-order terms, see ``hessian`` and ``adam``). The weights solve the
convex quadratic programme

    minimise  −pᵀw + (η/2) wᵀQ₊w + (λ/2)‖w‖²    subject to  w ≥ 0,  Σ w = total

where the damping λ > 0 makes it strictly convex and Q₊ is Q with its negative curvature removed (H_T may be
indefinite). At scale Q is low rank through L landmarks, Q = C M Cᵀ (C ``[n, L]`` propagation coefficients,
M ``[L, L]`` the landmark block); then the solver sees the lifted form over x = [w; y], y = Cᵀw,

    minimise  −pᵀw + (η/2) yᵀM₊y + (λ/2)‖w‖²    subject to  y − Cᵀw = 0,  1ᵀw = total,  w ≥ 0

so memory is O(nL), never n × n. Without C, M is Q itself and the direct form is solved. Both go to Clarabel (an
interior-point conic solver). First-order selection needs no solver: take the top-k rows of p.

Clarabel and SciPy are imported when a QP is solved, so the rest of the package imports without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inflow.errors import InflowError

if TYPE_CHECKING:
    import clarabel

_ACCEPTED = ("Solved", "AlmostSolved")


@dataclass(frozen=True)
class QPSolution:
    """The optimal weights ``[n]`` (≥ 0, summing to ``total``), the objective −pᵀw + (η/2) wᵀQ₊w + (λ/2)‖w‖² at
    them, the solver's status, and ``clipped``: the share Σ|negative eigenvalues| / Σ|eigenvalues| of M's spectrum
    removed to make the problem convex (0 when M is positive semi-definite)."""

    weights: np.ndarray
    objective: float
    status: str
    clipped: float


def convexify(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """M₊ ``[L, L]``: the symmetric part of ``matrix`` with its negative eigenvalues set to 0, and the share of
    spectral mass removed (Σ|λ_i<0| / Σ|λ_i|). Negative eigenvalues within rounding (|λ| ≤ L·ε·max|λ|) are
    clipped too but not counted, so a positive semi-definite M reports 0."""
    sym = 0.5 * (matrix + matrix.T)
    values, vectors = np.linalg.eigh(sym)
    scale = float(np.abs(values).max()) if values.size else 0.0
    if scale == 0.0:
        return np.zeros_like(sym), 0.0
    negative = values < -sym.shape[0] * np.finfo(np.float64).eps * scale
    clipped = float(np.abs(values[negative]).sum() / np.abs(values).sum())
    kept = (vectors * np.maximum(values, 0.0)) @ vectors.T
    return 0.5 * (kept + kept.T), clipped


def second_order_weights(p: np.ndarray, M: np.ndarray, C: np.ndarray | None = None, *, eta: float,
                         damping: float, total: float | None = None) -> QPSolution:
    """Solve the weight QP of the module docstring for Q = C M Cᵀ (``C`` None: Q = ``M``).

    ``p [n]``, ``M [L, L]`` (symmetrised, then :func:`convexify`-ed), ``C [n, L]`` or None (then L = n); ``eta`` η > 0
    the step size, ``damping`` λ > 0, ``total`` the weights' sum (default n). Computed in float64. Raises
    ``InflowError`` when the solver does not reach Solved/AlmostSolved. The weights are clipped at 0 (an interior
    point solution leaves tiny negatives) and the objective is evaluated at the returned weights.
    """
    p, M, C = _checked(p, M, C, eta, damping)
    n = p.shape[0]
    total = float(n if total is None else total)
    if not (np.isfinite(total) and total > 0):
        raise ValueError(f"total must be a positive number (the weights' sum; default n = {n}), got {total}")
    m_plus, clipped = convexify(M)
    clarabel, sparse = _solver_modules()
    hessian, q, constraints, rhs, zeros = _problem(sparse, p, m_plus, C, eta, damping, total)
    cones = [clarabel.ZeroConeT(zeros), clarabel.NonnegativeConeT(n)]
    settings = _settings(clarabel.DefaultSettings())
    solution = clarabel.DefaultSolver(hessian, q, constraints, rhs, cones, settings).solve()
    status = str(solution.status)
    if status not in _ACCEPTED:
        raise InflowError(f"the weight QP solver stopped with status {status} (n={n}, eta={eta}, damping={damping}); "
                          "check p and M for extreme magnitudes (rescale them) or raise distill.damping")
    weights = np.maximum(np.asarray(solution.x)[:n], 0.0)
    return QPSolution(weights, _objective(weights, p, m_plus, C, eta, damping), status, clipped)


def _problem(sparse: Any, p: np.ndarray, m_plus: np.ndarray, C: np.ndarray | None, eta: float, damping: float,
             total: float) -> tuple[Any, np.ndarray, Any, np.ndarray, int]:
    """Clarabel's data for min ½xᵀPx + qᵀx s.t. Ax + s = b, s in (zero cone of ``zeros`` rows) × (n ≥ 0 rows):
    P (upper triangle, CSC), q, A (CSC), b and the zero cone's size. Direct: x = w, P = ηM₊ + λI, rows 1ᵀw = total
    and −w ≤ 0. Lifted: x = [w; y], P = diag(λI, ηM₊), rows y − Cᵀw = 0, 1ᵀw = total and −w ≤ 0."""
    n = p.shape[0]
    if C is None:
        hessian = sparse.csc_matrix(eta * m_plus + damping * np.eye(n))
        q = -p
        equality = sparse.csc_matrix(np.ones((1, n)))
        nonneg = -sparse.identity(n, format="csc")
    else:
        landmarks = C.shape[1]
        hessian = sparse.block_diag([damping * sparse.identity(n), sparse.csc_matrix(eta * m_plus)])
        q = np.concatenate([-p, np.zeros(landmarks)])
        equality = sparse.vstack([sparse.hstack([sparse.csc_matrix(-C.T), sparse.identity(landmarks)]),
                                  sparse.hstack([np.ones((1, n)), sparse.csc_matrix((1, landmarks))])])
        nonneg = sparse.hstack([-sparse.identity(n), sparse.csc_matrix((n, landmarks))])
    zeros = equality.shape[0]
    rhs = np.concatenate([np.zeros(zeros - 1), [total], np.zeros(n)])
    return sparse.triu(hessian).tocsc(), q, sparse.vstack([equality, nonneg]).tocsc(), rhs, zeros


def _solver_modules() -> tuple[Any, Any]:
    """``clarabel`` and ``scipy.sparse``, or an error saying what to install."""
    try:
        import clarabel
        from scipy import sparse
    except ImportError as error:
        raise InflowError(f"second-order weights need the clarabel and scipy packages ({error}); install them "
                          "with `pip install clarabel scipy`") from error
    return clarabel, sparse


def _settings(settings: clarabel.DefaultSettings) -> clarabel.DefaultSettings:
    """Quiet, with gap and feasibility tolerances 1e-10 instead of 1e-8: off-support weights then fall to ~1e-9
    of the total instead of ~1e-6, for a few more iterations (an unreachable tolerance ends AlmostSolved)."""
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-10
    return settings


def _objective(w: np.ndarray, p: np.ndarray, m_plus: np.ndarray, C: np.ndarray | None, eta: float,
               damping: float) -> float:
    """−pᵀw + (η/2) yᵀM₊y + (λ/2)‖w‖² with y = Cᵀw (y = w without C)."""
    y = w if C is None else C.T @ w
    return float(-p @ w + 0.5 * eta * y @ m_plus @ y + 0.5 * damping * w @ w)


def _checked(p: np.ndarray, M: np.ndarray, C: np.ndarray | None, eta: float,
             damping: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 copies of p, M, C after checking shapes, finiteness and the positive scalars."""
    p = np.asarray(p, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] == 0:
        raise ValueError(f"p must be a non-empty [n] vector, got shape {p.shape}")
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square [L, L] matrix, got shape {M.shape}")
    if C is None:
        if M.shape[0] != p.shape[0]:
            raise ValueError(f"without C, M is Q itself and must be [n, n] = [{p.shape[0]}, {p.shape[0]}], got "
                             f"{M.shape}; pass the propagation coefficients C [n, L] for a landmark block M")
    else:
        C = np.asarray(C, dtype=np.float64)
        if C.shape != (p.shape[0], M.shape[0]):
            raise ValueError(f"C must be [n, L] = [{p.shape[0]}, {M.shape[0]}] (rows of p, size of M), got {C.shape}")
    for name, array in (("p", p), ("M", M), ("C", C)):
        if array is not None and not np.isfinite(array).all():
            raise ValueError(f"{name} has non-finite entries: recompute the influence terms (diverged model?)")
    if not eta > 0:
        raise ValueError(f"eta (the step size η) must be positive, got {eta}")
    if not damping > 0:
        raise ValueError(f"damping λ must be positive (it makes the QP strictly convex), got {damping}")
    return p, M, C
