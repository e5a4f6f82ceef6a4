"""Named regions of the extraction for ``torch.profiler``, free when no profiler is recording.

The gradient path marks its phases (``inflow.forward``, ``inflow.head``, ``inflow.backward``,
``inflow.outer_products``, ``inflow.features``, ``inflow.sketch``) so that a profile of the features stage can be
split by phase as well as by operator (``benchmarks/breakdown.py``). A ``torch.profiler.record_function`` costs
about 4 us even with no profiler running (it enters the dispatcher); :func:`region` checks first (~0.05 us) and
is a no-op then, so the marks stay in the hot path (per LoRA layer in the backward) at no cost.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

PREFIX = "inflow."
_NOTHING = nullcontext()


def region(name: str) -> AbstractContextManager[object]:
    """A ``record_function`` named ``inflow.<name>`` while a profiler records on this thread, else a no-op."""
    if torch.autograd._profiler_enabled():
        return torch.profiler.record_function(PREFIX + name)
    return _NOTHING
