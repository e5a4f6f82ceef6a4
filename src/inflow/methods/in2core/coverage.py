"""Coverage of test points by the pool (In2Core): how much helpful influence the training data offers each one.

With I(z, j) the DataInf influence of pool row z on test row j (negative = helpful, :mod:`.datainf`), a test
row's *support* from z is s(z, j) = max(−I(z, j), 0). For every test row j this accumulates, streamed over pool
chunks ``[c, m]``:

    total_j = Σ_z s(z, j)            (all the help the pool offers)
    top_j   = Σ of the `top` largest s(z, j)   (the help its best `top` proponents offer)
    count_j = #{z : I(z, j) < 0}     (how many pool rows help at all)

A test row whose total and top support are small is one the data does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Coverage:
    """Running coverage of ``m`` test rows; :meth:`update` with each chunk's influences ``[c, m]``."""

    m: int
    top: int = 10
    total: Tensor = field(init=False)
    best: Tensor = field(init=False)  # [≤ top, m]: the largest supports seen so far, per column
    count: Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.top < 1:
            raise ValueError("in2core.coverage_top must be at least 1")
        self.total = torch.zeros(self.m, dtype=torch.float64)
        self.best = torch.zeros(0, self.m, dtype=torch.float64)
        self.count = torch.zeros(self.m, dtype=torch.int64)

    def update(self, influence: Tensor) -> None:
        """Add a chunk of pool rows: ``influence`` ``[c, m]`` (I(z, j), negative = helpful)."""
        support = (-influence.to(torch.float64)).clamp_min(0)
        self.total += support.sum(0)
        self.count += (influence < 0).sum(0)
        both = torch.cat([self.best, support])
        self.best = both.topk(min(self.top, both.shape[0]), dim=0).values

    def result(self) -> dict[str, Tensor]:
        """``{"total", "top", "count"}``, each ``[m]``."""
        return {"total": self.total.clone(), "top": self.best.sum(0), "count": self.count.clone()}
