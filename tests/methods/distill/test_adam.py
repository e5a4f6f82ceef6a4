"""Adam's next step as θ' = θ − η(a ⊙ g + b): a hand-computed example, an exact match with one real
``torch.optim.AdamW`` step in float64, and clear errors."""

from __future__ import annotations

import pytest
import torch

from inflow.methods.distill import adam_drift, adam_preconditioner


def test_hand_computed_example() -> None:
    """β1 = 1/2, β2 = 3/4, t = 1: 1 − β1² = 3/4, 1 − β2² = 7/16, so v = (7/16)[4, 1/4] gives √(v / (7/16)) = [2, 1/2];
    with ε = 1 the denominators are [3, 3/2] and (1 − β1)/(1 − β1²) = 2/3."""
    v = torch.tensor([4.0, 0.25], dtype=torch.float64) * 7 / 16
    m = torch.tensor([0.3, -0.6], dtype=torch.float64)
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    a = adam_preconditioner(v, 1, 0.5, 0.75, 1.0)
    assert torch.allclose(a, torch.tensor([2 / 9, 4 / 9], dtype=torch.float64), rtol=0, atol=1e-15)
    b = adam_drift(m, v, 1, 0.5, 0.75, 1.0, weight_decay=0.1, params=theta)
    # β1 m / (1 − β1²) = (2/3)[0.3, −0.6] = [0.2, −0.4], over [3, 3/2], plus 0.1 θ
    expected = torch.tensor([0.2 / 3 + 0.1, -0.4 / 1.5 - 0.2], dtype=torch.float64)
    assert torch.allclose(b, expected, rtol=0, atol=1e-15)
    assert torch.allclose(adam_drift(m, v, 1, 0.5, 0.75, 1.0), expected - 0.1 * theta, rtol=0, atol=1e-15)


def _adamw_after(steps: int, lr: float, betas: tuple[float, float], eps: float,
                 wd: float) -> tuple[list[torch.nn.Parameter], torch.optim.AdamW]:
    """Two float64 parameters and an AdamW that has taken ``steps`` steps on random gradients."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=generator, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(5, generator=generator, dtype=torch.float64))]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator, dtype=torch.float64)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_one_adamw_step_is_theta_minus_eta_a_g_plus_b_exactly(steps: int) -> None:
    """Exact, not the frozen-v approximation: AdamW first sets v' = β2 v + (1 − β2) g² from the new gradient g, then
    steps with v'. Passing that v' (computed here from g) as ``exp_avg_sq`` and the pre-step m, θ and step count t,
    θ − η(a ⊙ g + b) must equal AdamW's result to rounding; a bias correction with the wrong power of β1 or β2
    (t instead of t + 1) moves the result by far more than the tolerance, as the last assertion shows."""
    lr, betas, eps, wd = 0.05, (0.9, 0.95), 1e-3, 0.1
    params, optimizer = _adamw_after(steps, lr, betas, eps, wd)
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    flat = lambda tensors: torch.cat([t.detach().reshape(-1) for t in tensors])
    state = [optimizer.state[p] for p in params]
    assert all(int(s["step"]) == steps for s in state)
    m, v, theta, g = flat(s["exp_avg"] for s in state), flat(s["exp_avg_sq"] for s in state), flat(params), flat(grads)
    v_next = betas[1] * v + (1 - betas[1]) * g * g
    a = adam_preconditioner(v_next, steps, *betas, eps)
    b = adam_drift(m, v_next, steps, *betas, eps, weight_decay=wd, params=theta)
    predicted = theta - lr * (a * g + b)
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer.step()
    assert (flat(params) - predicted).abs().max() < 1e-12
    stale_a = adam_preconditioner(v_next, steps - 1, *betas, eps)
    stale_b = adam_drift(m, v_next, steps - 1, *betas, eps, weight_decay=wd, params=theta)
    assert (flat(params) - (theta - lr * (stale_a * g + stale_b))).abs().max() > 1e-6


@pytest.mark.parametrize("steps, bound", [(10, 0.15), (200, 0.01)])
def test_frozen_second_moment_error_shrinks_with_the_step_count(steps: int, bound: float) -> None:
    """The approximation used for selection: a and b from the pre-step v (frozen) instead of v'. The new gradient's
    share of the bias-corrected v' is (1 − β2)/(1 − β2^{t+1}), about 1/(t+1) while t ≪ 1/(1 − β2): with gradients
    as large as the past ones the update is off by ~7% after 10 steps and well under 1% after 200."""
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-8
    params, optimizer = _adamw_after(steps, lr, betas, eps, 0.0)
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    flat = lambda tensors: torch.cat([t.detach().reshape(-1) for t in tensors])
    state = [optimizer.state[p] for p in params]
    m, v, theta, g = flat(s["exp_avg"] for s in state), flat(s["exp_avg_sq"] for s in state), flat(params), flat(grads)
    update = lr * (adam_preconditioner(v, steps, *betas, eps) * g + adam_drift(m, v, steps, *betas, eps))
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer.step()
    actual = theta - flat(params)
    assert torch.linalg.norm(actual - update) < bound * torch.linalg.norm(actual)


def test_dtype_follows_inputs() -> None:
    v32 = torch.rand(4)
    assert adam_preconditioner(v32, 2, 0.9, 0.99, 1e-8).dtype == torch.float32
    assert adam_preconditioner(v32.double(), 2, 0.9, 0.99, 1e-8).dtype == torch.float64
    assert adam_drift(torch.rand(4), v32, 2, 0.9, 0.99, 1e-8).dtype == torch.float32
    assert adam_drift(torch.rand(4, dtype=torch.float64), v32, 2, 0.9, 0.99, 1e-8).dtype == torch.float64


@pytest.mark.parametrize("call, message", [
    (lambda: adam_drift(torch.zeros(3), torch.ones(3), 1, 0.9, 0.99, 1e-8, weight_decay=0.1), "params is None"),
    (lambda: adam_drift(torch.zeros(4), torch.ones(3), 1, 0.9, 0.99, 1e-8), "exp_avg has 4 entries"),
    (lambda: adam_drift(torch.zeros(3), torch.ones(3), 1, 0.9, 0.99, 1e-8, 0.1, torch.zeros(2)), "params has 2"),
    (lambda: adam_preconditioner(torch.ones(2, 3), 1, 0.9, 0.99, 1e-8), "flat"),
    (lambda: adam_preconditioner(-torch.ones(3), 1, 0.9, 0.99, 1e-8), "negative"),
    (lambda: adam_preconditioner(torch.ones(3), -1, 0.9, 0.99, 1e-8), "step"),
    (lambda: adam_preconditioner(torch.ones(3), 1, 1.0, 0.99, 1e-8), "beta1"),
    (lambda: adam_preconditioner(torch.ones(3), 1, 0.9, 0.99, -1.0), "eps"),
    (lambda: adam_preconditioner(torch.zeros(3), 1, 0.9, 0.99, 0.0), "divide by zero"),
    (lambda: adam_preconditioner(torch.tensor([1.0, float("nan")]), 1, 0.9, 0.99, 1e-8), "non-finite"),
])
def test_bad_inputs_say_what_to_fix(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
