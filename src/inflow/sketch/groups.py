"""Feed a sketch many rows at a time: per-example features of several batches are gathered, then projected once.

A dense sketch streams its whole random matrix (generated, or read from the piece cache) through every
``project`` call, whatever the number of rows. At a batch of 16 rows the product ``[16, D] @ [D, d]`` is bound by
that stream, not by arithmetic; at 64 rows and more it is bound by arithmetic. Measured on this project's 2-core
CPU (Rademacher, ``D = 57344`` in 4 blocks, ``d = 8192``, 1 thread): 9.5 ms per row at 16 rows a call, 3.9 ms at
64, 3.1 ms at 256 (``docs/benchmarks.md``). So the extraction gathers the features of whole batches into a buffer
of at most ``budget_bytes`` and projects the buffer when the next batch would not fit, and at the end.

A group never spans two :meth:`SketchGroups.finish` calls (the extraction calls it once per store chunk), so
the rows projected together, and so the bits written, depend only on the chunk: resumed and distributed runs
stay bit-identical to uninterrupted ones. Results equal per-batch projection up to float summation order (BLAS
picks its kernel by the number of rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inflow.sketch.block import BlockSketch
from inflow.sketch.cache import MIB

DEFAULT_GROUP_BYTES = 256 * MIB


class SketchGroups:
    """Writes ``sketch.project(rows)`` into ``out[index]``, projecting gathered rows in groups.

    ``out``: [N, sketch.out_dim] float32 (CPU or the sketch's device); ``add(index, feats)`` takes the row
    positions ``index`` (``len(index) == feats.shape[0]``) and their unprojected features ``feats [B, D]``;
    nothing is written to ``out`` before a group is projected, and everything is after :meth:`finish`.
    ``budget_bytes`` bounds the gathered features (a single batch larger than it is projected on its own).
    """

    def __init__(self, sketch: BlockSketch, out: Tensor, budget_bytes: int = DEFAULT_GROUP_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"sketch group budget must be >= 0 bytes, got {budget_bytes} (0: one batch a call)")
        if out.dim() != 2 or out.shape[1] != sketch.out_dim:
            raise ValueError(f"output must be [N, {sketch.out_dim}], got {tuple(out.shape)}")
        self.sketch, self.out, self.budget_bytes = sketch, out, budget_bytes
        self.calls = 0  # project calls made (for tests and benchmarks)
        self._index: list[int] = []
        self._feats: list[Tensor] = []
        self._bytes = 0

    def add(self, index: Sequence[int], feats: Tensor) -> None:
        """Gather ``feats [B, D]`` for rows ``index``; projects what was gathered first if they would not fit."""
        if feats.dim() != 2 or feats.shape[0] != len(index):
            raise ValueError(f"expected features [{len(index)}, D] for {len(index)} rows, got {tuple(feats.shape)}")
        size = feats.numel() * feats.element_size()
        if self._feats and self._bytes + size > self.budget_bytes:
            self.flush()
        self._index.extend(int(i) for i in index)
        self._feats.append(feats)
        self._bytes += size
        if self._bytes >= self.budget_bytes:
            self.flush()

    def flush(self) -> None:
        """Project the gathered rows now (no-op when none)."""
        if not self._feats:
            return
        feats = self._feats[0] if len(self._feats) == 1 else torch.cat(self._feats)
        projected = self.sketch.project(feats.float())
        self.out[torch.tensor(self._index, dtype=torch.long)] = projected.to(self.out.device)
        self.calls += 1
        self._index, self._feats, self._bytes = [], [], 0

    def finish(self) -> Tensor:
        """Project what is left and return ``out``."""
        self.flush()
        return self.out
