"""The process's cache of store contexts (a loaded model each): CPU jobs keep up to two, a GPU holds one at a time.

The jobs here are stand-ins whose ``context()`` records that it was built: the cache's policy is what is tested,
not a model (a GPU job's context is never built on the device here, so no GPU is needed).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import pytest
import torch

from inflow.devices import wants_gpu
from inflow.pipeline import stores


@dataclasses.dataclass(frozen=True)
class _Job:
    store: str
    device: str = "cpu"
    task: str | None = None
    threads: int = 1

    def context(self) -> object:
        return object()


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "_CONTEXTS", OrderedDict())


def test_cpu_contexts_are_reused_and_two_are_kept() -> None:
    a, b, c = _Job("a"), _Job("b"), _Job("c")
    first = stores._context(a)
    assert stores._context(a) is first  # built once
    stores._context(b)
    assert list(stores._CONTEXTS) == [a, b]
    stores._context(c)
    assert list(stores._CONTEXTS) == [b, c]  # the least recently used went
    assert stores._context(b) is not None and list(stores._CONTEXTS) == [c, b]


def test_a_gpu_holds_one_context_at_a_time() -> None:
    cpu, gpu1, gpu2 = _Job("cpu"), _Job("g1", device="cuda"), _Job("g2", device="cuda:0")
    stores._context(cpu)
    stores._context(gpu1)
    assert list(stores._CONTEXTS) == [cpu, gpu1]
    stores._context(gpu2)  # a second model on the GPU would leave its batches less memory than they are sized for
    assert list(stores._CONTEXTS) == [cpu, gpu2]
    refreshed = stores._context(gpu2, refresh=True)
    assert stores._CONTEXTS[gpu2] is refreshed and list(stores._CONTEXTS) == [cpu, gpu2]


def test_which_settings_run_on_a_gpu() -> None:
    assert not wants_gpu("cpu")
    assert wants_gpu("cuda") and wants_gpu("cuda:1")
    assert wants_gpu("auto") == torch.cuda.is_available()
