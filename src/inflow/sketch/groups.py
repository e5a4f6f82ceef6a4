"""Feed a sketch many rows at a time: per-example features of several batches are gathered, then projected once.

A dense sketch streams its whole random matrix (generated, or read from the piece cache) through every
``project`` call, whatever the number of rows. At a batch of 16 rows the product ``[16, D] @ [D, d]`` is bound by
that stream, not by arithmetic; at 64 rows and more it is bound by arithmetic. Measured on this project's 2-core
CPU (Rademacher, ``D = 57344`` in 4 blocks, ``d = 8192``, 1 thread): 9.5 ms per row at 16 rows a call, 3.9 ms at
64, 3.1 ms at 256 (``docs/benchmarks.md``). So the extraction gathers the features of whole batches and projects
them ``budget_bytes // row_bytes`` rows at a time (the last group of a chunk: what is left).

Groups are cut by rows, not by batches: the rows of a chunk arrive in one order whatever the batch size
(:func:`inflow.data.batching.token_batches`), so the rows projected together, and so the bits written, depend
only on the chunk and the budget, not on the batching; a group never spans two :meth:`SketchGroups.finish` calls
(the extraction calls it once per store chunk), so resumed and distributed runs stay bit-identical to
uninterrupted ones. Results equal per-batch projection up to float summation order (BLAS picks its kernel by the
number of rows: MKL gives a row the same bits in any product of at least 4 rows, not in one of 1 or 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

import torch
from torch import Tensor

from inflow.devices import CPU_GROUP_MIB
from inflow.profiling import region
from inflow.sketch.block import BlockSketch
from inflow.sketch.cache import MIB

DEFAULT_GROUP_BYTES = CPU_GROUP_MIB * MIB  # the features stage picks per device (inflow.devices.default_group_mib)


class SketchGroups:
    """Writes ``sketch.project(rows)`` into ``out[index]``, projecting gathered rows in groups of a fixed size.

    ``out``: [N, sketch.out_dim] float32 (CPU or the sketch's device); ``add(index, feats)`` takes the row
    positions ``index`` (``len(index) == feats.shape[0]``) and their unprojected features ``feats [B, D]``;
    nothing is written to ``out`` before a group is projected, and everything is after :meth:`finish`.
    A group is ``max(1, budget_bytes // (4 * D))`` rows, whatever batches they came in (a batch may be split
    between two groups); ``budget_bytes = 0`` projects each ``add`` on its own instead. ``executor``: projects
    each group's blocks concurrently (:meth:`BlockSketch.project`).
    """

    def __init__(self, sketch: BlockSketch, out: Tensor, budget_bytes: int = DEFAULT_GROUP_BYTES,
                 executor: Executor | None = None) -> None:
        if budget_bytes < 0:
            raise ValueError(f"sketch group budget must be >= 0 bytes, got {budget_bytes} (0: one batch a call)")
        if out.dim() != 2 or out.shape[1] != sketch.out_dim:
            raise ValueError(f"output must be [N, {sketch.out_dim}], got {tuple(out.shape)}")
        self.sketch, self.out, self.budget_bytes, self.executor = sketch, out, budget_bytes, executor
        self.group_rows = max(1, budget_bytes // (4 * sketch.in_dim)) if budget_bytes else 0
        self.calls = 0  # project calls made (for tests and benchmarks)
        self._index: list[int] = []
        self._feats: list[Tensor] = []
        self._rows = 0

    def add(self, index: Sequence[int], feats: Tensor) -> None:
        """Gather ``feats [B, D]`` for rows ``index``; projects every group that is now full."""
        if feats.dim() != 2 or feats.shape[0] != len(index):
            raise ValueError(f"expected features [{len(index)}, D] for {len(index)} rows, got {tuple(feats.shape)}")
        self._index.extend(int(i) for i in index)
        self._feats.append(feats)
        self._rows += len(index)
        if not self.group_rows:
            self.flush()
        while self.group_rows and self._rows >= self.group_rows:
            self._project(self.group_rows)

    def flush(self) -> None:
        """Project the gathered rows now, whatever their number (no-op when none)."""
        if self._rows:
            self._project(self._rows)

    def _project(self, rows: int) -> None:
        """Project the first ``rows`` gathered rows and keep the rest gathered."""
        feats = self._feats[0] if len(self._feats) == 1 else torch.cat(self._feats)
        with region("sketch"):
            projected = self.sketch.project(feats[:rows].float(), executor=self.executor)
        self.out[torch.tensor(self._index[:rows], dtype=torch.long)] = projected.to(self.out.device)
        self.calls += 1
        rest = feats[rows:]
        self._index = self._index[rows:]
        self._feats = [rest] if rest.shape[0] else []
        self._rows -= rows

    def finish(self) -> Tensor:
        """Project what is left and return ``out``."""
        self.flush()
        return self.out
