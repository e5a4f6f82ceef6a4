"""SGD and Adam gradient features against the formulas written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inflow.gradients.features import adam_features, sgd_features


def states(seed: int = 0, rows: int = 3, dim: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(rows, dim))
    exp_avg = rng.normal(scale=0.1, size=dim)
    # second moments spanning 1e-12 .. 1e-2, so where eps sits matters
    exp_avg_sq = 10.0 ** rng.uniform(-12, -2, size=dim)
    return grads, exp_avg, exp_avg_sq


@pytest.mark.parametrize("inside", [True, False])
def test_adam_feature_is_the_one_step_adam_update(inside: bool) -> None:
    grads, m, v = states()
    b1, b2, eps = 0.9, 0.999, 1e-8
    m_new = b1 * m[None, :] + (1 - b1) * grads
    v_new = b2 * v[None, :] + (1 - b2) * grads**2
    expected = m_new / np.sqrt(v_new + eps) if inside else m_new / (np.sqrt(v_new) + eps)
    got = adam_features(torch.from_numpy(grads), torch.from_numpy(m), torch.from_numpy(v), b1, b2, eps,
                        eps_inside_sqrt=inside)
    assert got.shape == grads.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=0)


def test_eps_placement_changes_the_feature_and_defaults_to_less() -> None:
    grads, m, v = (torch.from_numpy(a) for a in states(1))
    grads = grads * 1e-6  # tiny gradients: v' near eps, where the two forms differ
    default = adam_features(grads, m, v * 1e-6, 0.9, 0.999, 1e-8)
    inside = adam_features(grads, m, v * 1e-6, 0.9, 0.999, 1e-8, eps_inside_sqrt=True)
    outside = adam_features(grads, m, v * 1e-6, 0.9, 0.999, 1e-8, eps_inside_sqrt=False)
    assert torch.equal(default, inside)
    assert not torch.allclose(inside, outside, rtol=1e-3)


def test_adam_feature_promotes_float32_gradients_to_the_state_dtype() -> None:
    grads, m, v = states(2)
    got = adam_features(torch.from_numpy(grads).float(), torch.from_numpy(m), torch.from_numpy(v), 0.9, 0.99, 1e-8)
    assert got.dtype == torch.float64


def test_adam_feature_checks_shapes() -> None:
    grads, m, v = (torch.from_numpy(a) for a in states())
    with pytest.raises(ValueError, match="exp_avg has shape"):
        adam_features(grads, m[:-1], v, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        adam_features(grads[0], m, v, 0.9, 0.999, 1e-8)


def test_sgd_feature_is_the_gradient() -> None:
    grads = torch.randn(4, 9)
    assert sgd_features(grads) is grads
