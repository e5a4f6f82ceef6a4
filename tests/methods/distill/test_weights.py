"""The second-order weight QP: KKT conditions of the solution against a convexified Q computed here with numpy,
the lifted (landmark) form against the direct one, the closed form when Q = 0, the clipped spectral share, and
clear errors."""

from __future__ import annotations

import clarabel
import numpy as np
import pytest

from inflow.errors import InflowError
from inflow.methods.distill import second_order_weights

N, L = 30, 5


def _instance(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p [N], M [L, L] (indefinite for even seeds, positive definite for odd ones), C [N, L]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(L, L))
    m = a + a.T if seed % 2 == 0 else a @ a.T + 0.1 * np.eye(L)
    return rng.normal(size=N), m, rng.normal(size=(N, L))


def _clip(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(0.5 * (m + m.T))
    return vectors @ np.diag(np.maximum(values, 0.0)) @ vectors.T


def _simplex_argmax(p: np.ndarray, damping: float, total: float) -> np.ndarray:
    """argmax pᵀw − (λ/2)‖w‖² over w ≥ 0, Σw = total: w_i = max(0, (p_i − μ)/λ), μ set by the sum (sorting)."""
    u = np.sort(p)[::-1]
    for k in range(len(u), 0, -1):
        mu = (u[:k].sum() - damping * total) / k
        if u[k - 1] > mu:
            return np.maximum(0.0, (p - mu) / damping)
    raise AssertionError("unreachable: k = 1 always qualifies")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eta, damping, total", [(0.5, 0.1, None), (2.0, 1.0, 3.0)])
def test_solution_satisfies_the_kkt_conditions(seed: int, eta: float, damping: float, total: float | None) -> None:
    """∇f(w) = −p + ηQ₊w + λw equals μ on the support, is ≥ μ off it, w ≥ 0 and Σw = total."""
    p, m, c = _instance(seed)
    solution = second_order_weights(p, m, c, eta=eta, damping=damping, total=total)
    w = solution.weights
    total = N if total is None else total
    q_plus = c @ _clip(m) @ c.T
    gradient = -p + eta * q_plus @ w + damping * w
    support = w > 1e-6 * total
    mu = np.median(gradient[support])
    scale = np.abs(gradient).max()
    assert solution.status in ("Solved", "AlmostSolved")
    assert np.all(w >= 0) and abs(w.sum() - total) < 1e-8 * total
    assert np.abs(gradient[support] - mu).max() < 1e-6 * scale
    assert np.all(gradient[~support] >= mu - 1e-6 * scale)
    expected = -p @ w + 0.5 * eta * w @ q_plus @ w + 0.5 * damping * w @ w
    assert solution.objective == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_lifted_form_equals_direct_form(seed: int) -> None:
    p, m, c = _instance(seed)
    lifted = second_order_weights(p, m, c, eta=0.5, damping=0.1)
    direct = second_order_weights(p, c @ _clip(m) @ c.T, eta=0.5, damping=0.1)
    assert np.abs(lifted.weights - direct.weights).max() < 1e-6
    assert lifted.objective == pytest.approx(direct.objective, rel=1e-8)
    assert direct.clipped == 0.0  # C M₊ Cᵀ is positive semi-definite (rank L): its rounding negatives are not counted


@pytest.mark.parametrize("with_c", [True, False])
def test_zero_curvature_gives_the_simplex_projection(with_c: bool) -> None:
    p = np.random.default_rng(7).normal(size=N)
    damping, total = 0.4, 5.0
    m, c = (np.zeros((L, L)), np.random.default_rng(8).normal(size=(N, L))) if with_c else (np.zeros((N, N)), None)
    solution = second_order_weights(p, m, c, eta=1.0, damping=damping, total=total)
    expected = _simplex_argmax(p, damping, total)
    assert 1 < (expected > 0).sum() < N  # a real support, neither one row nor all
    assert np.abs(solution.weights - expected).max() < 1e-7
    assert solution.clipped == 0.0


def test_clipped_is_the_negative_share_of_the_spectrum() -> None:
    m = np.diag([3.0, 1.0, -2.0, 0.0])
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    m = rotation @ m @ rotation.T
    p = np.array([1.0, 0.5, -0.2, 0.1])
    assert second_order_weights(p, m, eta=1.0, damping=0.1).clipped == pytest.approx(2.0 / 6.0, rel=1e-12)
    for seed in range(6):
        p, m, c = _instance(seed)
        negative = np.linalg.eigvalsh(m).min() < 0
        assert (second_order_weights(p, m, c, eta=0.5, damping=0.1).clipped > 0) == negative
    low_rank = np.random.default_rng(1).normal(size=(L, 2))
    assert second_order_weights(p, low_rank @ low_rank.T, c, eta=0.5, damping=0.1).clipped == 0.0


def test_asymmetric_m_is_symmetrised() -> None:
    p, m, c = _instance(1)
    skew = np.triu(np.ones((L, L)), 1)
    shifted = second_order_weights(p, m + skew - skew.T, c, eta=0.5, damping=0.1)
    assert np.abs(shifted.weights - second_order_weights(p, m, c, eta=0.5, damping=0.1).weights).max() < 1e-9


def test_solver_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    real = clarabel.DefaultSettings

    def one_iteration() -> clarabel.DefaultSettings:
        settings = real()
        settings.max_iter = 1
        return settings

    monkeypatch.setattr(clarabel, "DefaultSettings", one_iteration)
    p, m, c = _instance(0)
    with pytest.raises(InflowError, match="status MaxIterations"):
        second_order_weights(p, m, c, eta=0.5, damping=0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"M": np.eye(3), "C": None}, "without C"),
    ({"C": np.ones((N, L + 1))}, "C must be"),
    ({"M": np.ones((L, L + 1))}, "square"),
    ({"damping": 0.0}, "damping"),
    ({"eta": -1.0}, "eta"),
    ({"total": 0.0}, "total"),
    ({"p": np.full(N, np.nan)}, "non-finite"),
])
def test_bad_inputs_say_what_to_fix(kwargs: dict, message: str) -> None:
    p, m, c = _instance(0)
    args = {"p": p, "M": m, "C": c, "eta": 0.5, "damping": 0.1} | kwargs
    with pytest.raises(ValueError, match=message):
        second_order_weights(**args)
