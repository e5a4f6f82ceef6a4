"""Kernel ridge propagation: against a dense numpy solve, exact at the landmarks when every row is one and the
damping vanishes, chunked prediction equal to one shot, the median bandwidth, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inflow.methods.distill.propagate import fit_kernel_ridge, kernel_matrix, median_bandwidth


def _data(n: int = 40, d: int = 6, m: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    e = torch.from_numpy(rng.normal(size=(n, d)))
    p = torch.from_numpy(np.sin(e.numpy() @ rng.normal(size=(d, m))))
    return e, p


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_matches_a_dense_numpy_solve(kernel: str) -> None:
    e, p = _data()
    landmarks, rest = e[:15], e[15:]
    model = fit_kernel_ridge(landmarks, p[:15], damping=0.1, kernel=kernel)
    lm, r = landmarks.numpy(), rest.numpy()
    if kernel == "rbf":
        d_ll = np.linalg.norm(lm[:, None] - lm[None], axis=-1)
        sigma = np.median(d_ll[np.triu_indices(15, k=1)])
        k_ll = np.exp(-d_ll**2 / (2 * sigma**2))
        k_rl = np.exp(-np.linalg.norm(r[:, None] - lm[None], axis=-1) ** 2 / (2 * sigma**2))
        assert model.sigma == pytest.approx(sigma)
    else:
        k_ll, k_rl = lm @ lm.T, r @ lm.T
    expected = k_rl @ np.linalg.solve(k_ll + 0.1 * np.eye(15), p[:15].numpy())
    np.testing.assert_allclose(model.predict(rest).numpy(), expected, rtol=1e-9, atol=1e-12)


def test_exact_at_the_landmarks_when_every_row_is_one() -> None:
    e, p = _data(n=25)
    model = fit_kernel_ridge(e, p, damping=1e-10, kernel="rbf")
    np.testing.assert_allclose(model.predict(e).numpy(), p.numpy(), atol=1e-6)
    damped = fit_kernel_ridge(e, p, damping=1.0, kernel="rbf").predict(e)
    assert float((damped - p).abs().max()) > 1e-2  # damping really shrinks the fit: the check above can fail


def test_chunked_prediction_equals_one_shot_and_one_column_works() -> None:
    e, p = _data(n=50)
    model = fit_kernel_ridge(e[:10], p[:10, 0], damping=0.05)
    assert model.alpha.shape == (10, 1)
    whole = model.predict(e)
    chunks = torch.cat(list(model.predict_chunks(e.split(7))))
    torch.testing.assert_close(chunks, whole, rtol=1e-12, atol=1e-14)  # cdist picks its kernel by size
    assert model.predict(e.float()).dtype == torch.float64  # float16/32 store rows are promoted


def test_median_bandwidth_and_errors() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    assert median_bandwidth(pts) == pytest.approx(float(np.median([5.0, 1.0, np.sqrt(18.0)])))
    with pytest.raises(ValueError, match="identical"):
        median_bandwidth(torch.ones(4, 3))
    with pytest.raises(ValueError, match="distill.damping must be positive"):
        fit_kernel_ridge(pts, torch.ones(3), damping=0.0)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_matrix(pts, pts, "cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 landmark embeddings for 2"):
        fit_kernel_ridge(pts, torch.ones(2), damping=0.1)
