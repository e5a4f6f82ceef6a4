"""On a CPU a store's bytes do not depend on the token budget per batch, the number of threads, the sketch group
size or checkpointing.

Every row is padded to its own bucket width, batches run one per thread at one intra-op thread each, and every
matrix product whose rows must be independent has at least 8 rows, so what is computed for a row is the same
whichever rows share its batch or its sketch call. The references
are other settings of the same extraction (float32 stores, so no rounding hides a difference), and a control
shows that the comparison can fail: a row padded to another width gets other bits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from inflow.data.batching import bucket_width, collate
from inflow.gradients.per_example import per_example_grads
from inflow.parallel import torch_threads
from inflow.pipeline.features import FeatureContext, extract_store, featurize
from inflow.store import GradientStore

ROWS = 24


def _context(tiny_project, tmp_path: Path, kind: str = "rademacher") -> tuple[FeatureContext, list]:
    job = tiny_project.job(tmp_path / "unused.zarr", dtype="float32")
    ctx = FeatureContext(dataclasses.replace(job, sketch_kind=kind))
    return ctx, ctx.rows[:ROWS]


@pytest.mark.parametrize("kind", ["rademacher", "sparse_jl", "hadamard"])
def test_features_do_not_depend_on_budget_threads_or_groups(tiny_project, tmp_path: Path, kind: str) -> None:
    ctx, rows = _context(tiny_project, tmp_path, kind)
    assert len({len(r) for r in rows}) > 4  # rows of many lengths, so the budgets batch them differently
    group_bytes = 5 * 4 * ctx.sketch.in_dim  # 5 rows a sketch call: groups cut across batches
    with torch_threads(1):
        reference = featurize(ctx, rows, 10_000, True, group_bytes, workers=1)
        for batch_tokens, workers in [(1, 1), (64, 2), (200, 3), (10_000, 2)]:
            got = featurize(ctx, rows, batch_tokens, True, group_bytes, workers=workers)
            assert got.numpy().tobytes() == reference.numpy().tobytes(), (batch_tokens, workers)
        for rows_per_group in (0, 1, 3, 1000):  # and the sketch groups: 0 is one call per batch
            got = featurize(ctx, rows, 64, True, rows_per_group * 4 * ctx.sketch.in_dim, workers=2)
            assert got.numpy().tobytes() == reference.numpy().tobytes(), rows_per_group
    assert reference.abs().sum(dim=1).min() > 0  # every row was written


def test_a_store_is_the_same_at_any_budget_and_thread_count(tiny_project, tmp_path: Path) -> None:
    """... and with activation checkpointing (the recomputed forward gives the same bits)."""
    stores = []
    settings_b = {"batch_tokens": 0, "threads": 2, "gradient_checkpointing": True}
    for name, settings in [("a", {"batch_tokens": 32, "threads": 1}), ("b", settings_b)]:
        job = tiny_project.job(tmp_path / f"{name}.zarr", dtype="float32", chunk_rows=16, **settings)
        extract_store(job, progress=False)
        stores.append(GradientStore.open(job.store))
    assert stores[0].attrs == stores[1].attrs
    assert stores[0].read_all(raw=True).tobytes() == stores[1].read_all(raw=True).tobytes()


def test_control_another_padding_width_changes_the_bits(tiny_project, tmp_path: Path) -> None:
    """The tests above can fail: padding a row to another width than its bucket changes some of its bits."""
    ctx, rows = _context(tiny_project, tmp_path)
    differ = 0
    with torch_threads(1):
        for row in rows[:8]:
            own = per_example_grads(ctx.model, collate([row], ctx.pad_id, width=bucket_width(len(row))))[0]
            wide = per_example_grads(ctx.model, collate([row], ctx.pad_id, width=bucket_width(len(row)) + 40))[0]
            torch.testing.assert_close(own, wide, rtol=1e-4, atol=1e-6)  # the same gradient ...
            differ += int(not torch.equal(own, wide))  # ... but not always the same bits
    assert differ > 0
