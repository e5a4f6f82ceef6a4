"""The features stage on a GPU, end to end on the tiny project: a CUDA store against the CPU's, run to run, with
activation checkpointing. Skipped without CUDA (``benchmarks/gpu_checks.sh`` runs these on a lent GPU).

- float32 on CUDA (cuBLAS, the fused Rademacher kernel in IEEE fp32, SDPA's CUDA kernels) gives the CPU's
  features to float32 accuracy: every path of the stage (token batches, the scored-token LM head, Adam features,
  the sketch) computes the same thing on both devices.
- ``precision: auto`` (bfloat16 on the GPU) gives the same directions: each row's cosine with the CPU's float32
  row is near 1.
- Two runs of the same job agree, and activation checkpointing (the forward recomputed in the backward) agrees
  with none, to rounding: whether they repeat bit for bit depends on SDPA's fused backward kernels, which may add
  with atomics (``benchmarks/determinism.py`` measures it; ``gpu_checks.sh`` runs it).
- Compiled decoder layers (``features.compile``) give the eager rows' directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inflow.pipeline.features import extract_store
from inflow.store import GradientStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _store(tiny_project, path: Path, **features: object) -> tuple[dict, np.ndarray]:
    """The pool's store (float32 on disk, so no rounding hides a difference): its attrs and raw rows."""
    job = tiny_project.job(path, dtype="float32", chunk_rows=16, **features)
    extract_store(job, progress=False)
    store = GradientStore.open(job.store)
    return store.attrs, store.read_all(raw=True)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def test_a_float32_store_on_cuda_matches_the_cpu(tiny_project, tmp_path: Path) -> None:
    cpu_attrs, cpu = _store(tiny_project, tmp_path / "cpu.zarr", device="cpu", precision="float32")
    gpu_attrs, gpu = _store(tiny_project, tmp_path / "gpu.zarr", device="cuda", precision="float32")
    assert gpu.shape == cpu.shape and np.abs(cpu).sum(1).min() > 0
    assert cpu_attrs != gpu_attrs  # the device is part of the store's identity
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4 * float(np.abs(cpu).max()))
    assert _row_cosines(gpu, cpu).min() > 1 - 1e-6


def test_bfloat16_on_cuda_keeps_the_directions(tiny_project, tmp_path: Path) -> None:
    _, cpu = _store(tiny_project, tmp_path / "cpu.zarr", device="cpu", precision="float32")
    attrs, gpu = _store(tiny_project, tmp_path / "gpu.zarr", device="cuda", precision="auto")
    assert "bfloat16" in str(attrs)  # precision auto on a GPU with bfloat16, recorded as used
    cosines = _row_cosines(gpu, cpu)
    assert cosines.min() > 0.97, np.sort(cosines)[:5]


def test_cuda_runs_agree_and_checkpointing_changes_nothing(tiny_project, tmp_path: Path) -> None:
    settings = {"device": "cuda", "precision": "auto"}
    _, first = _store(tiny_project, tmp_path / "a.zarr", **settings)
    _, again = _store(tiny_project, tmp_path / "b.zarr", **settings)
    _, checkpointed = _store(tiny_project, tmp_path / "c.zarr", gradient_checkpointing=True, **settings)
    for other in (again, checkpointed):
        np.testing.assert_allclose(other, first, rtol=0, atol=1e-3 * float(np.abs(first).max()))
        assert _row_cosines(other, first).min() > 1 - 1e-5


def test_compiled_layers_on_cuda_keep_the_eager_directions(tiny_project, tmp_path: Path) -> None:
    """features.compile on a GPU (inductor's Triton kernels): the eager bfloat16 store's rows to bfloat16 rounding."""
    settings = {"device": "cuda", "precision": "auto"}
    _, eager = _store(tiny_project, tmp_path / "eager.zarr", **settings)
    attrs, compiled = _store(tiny_project, tmp_path / "compiled.zarr", compile=True, **settings)
    assert attrs.extraction["compiled"] is True
    assert _row_cosines(compiled, eager).min() > 0.99
