"""``benchmarks/breakdown.py``: a real profile of the defaults extraction on the CPU finds every phase the gradient
path marks, and the GPU side's arithmetic (kernels per launching operator, busy time) on events built here."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import Kernel

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import breakdown  # noqa: E402


def _figures(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in line.split())


def test_a_cpu_profile_finds_every_phase_of_the_gradient_path(capsys: pytest.CaptureFixture[str]) -> None:
    breakdown.main(["--quick", "--examples", "6", "--max-len", "48", "--sketch-dim", "512"])
    out = capsys.readouterr().out.splitlines()
    f = _figures(out[-1])
    for phase in ("forward", "head", "backward", "outer_products", "features", "sketch"):
        assert float(f[f"phase_{phase}"]) > 0, phase  # each region is marked and its operators found
    assert float(f["kind_gemm"]) > 0.2  # a transformer's time is mostly matmuls, even this tiny one's
    assert float(f["kind_attention"]) > 0
    shares = [float(v) for k, v in f.items() if k.startswith("phase_")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert sum(float(v) for k, v in f.items() if k.startswith("kind_")) == pytest.approx(1.0, abs=1e-3)
    assert float(f["profiled_s"]) <= float(f["wall_s"])  # one thread: its operators' own times fit in the call
    assert any(line.startswith("outer_products") for line in out)  # the table


def _event(name: str, parent: SimpleNamespace | None = None, kernels: tuple[float, ...] = (),
           device: DeviceType = DeviceType.CPU, span: tuple[float, float] = (0.0, 0.0),
           annotation: bool = False) -> SimpleNamespace:
    return SimpleNamespace(name=name, cpu_parent=parent, kernels=[Kernel("k", 0, d) for d in kernels],
                           device_type=device, is_async=False, self_cpu_time_total=0.0, is_user_annotation=annotation,
                           time_range=SimpleNamespace(start=span[0], end=span[1]))


def test_kernel_time_goes_to_the_launching_operator_in_its_innermost_region() -> None:
    grads = _event("inflow.backward")
    engine = _event("autograd::engine::evaluate_function: MmBackward0")  # autograd's thread: no region above
    products = _event("inflow.outer_products", engine)
    sketch = _event("inflow.sketch", kernels=(300.0,))  # a Triton kernel launched by Python in the region
    events = [
        _event("aten::mm", _event("inflow.forward"), kernels=(100.0, 50.0)),
        _event("aten::mm", engine, kernels=(200.0,)),
        _event("aten::bmm", products, kernels=(40.0,)),
        _event("aten::mul", engine, kernels=(10.0,)),
        _event("aten::_to_copy", products, kernels=(5.0,)),
        _event("aten::_scaled_dot_product_flash_attention", _event("inflow.forward"), kernels=(70.0,)),
        grads, sketch,
        _event("ampere_bf16_gemm", device=DeviceType.CUDA, span=(0.0, 100.0)),  # device side: counted once, above
    ]
    totals = breakdown.attribute(events, on_device=True)
    assert totals == pytest.approx({("forward", "gemm"): 150e-6, ("backward", "gemm"): 200e-6,
                                    ("outer_products", "gemm"): 40e-6, ("backward", "elementwise"): 10e-6,
                                    ("outer_products", "copy"): 5e-6, ("forward", "attention"): 70e-6,
                                    ("sketch", "kernel"): 300e-6})


def test_on_a_cpu_views_and_regions_own_time_are_the_hosts() -> None:
    region = _event("inflow.forward")
    region.self_cpu_time_total = 30.0
    view = _event("aten::view", region)
    view.self_cpu_time_total = 2.0
    add = _event("aten::add", region)
    add.self_cpu_time_total = 8.0
    assert breakdown.attribute([region, view, add], on_device=False) == pytest.approx(
        {("forward", "host"): 32e-6, ("forward", "elementwise"): 8e-6})


def test_busy_time_is_the_union_of_device_activity_without_annotations() -> None:
    events = [_event("k1", device=DeviceType.CUDA, span=(0.0, 10.0)),
              _event("k2", device=DeviceType.CUDA, span=(5.0, 12.0)),  # overlaps k1 (another stream)
              _event("k3", device=DeviceType.CUDA, span=(20.0, 25.0)),
              _event("inflow.sketch", device=DeviceType.CUDA, span=(0.0, 40.0), annotation=True),  # spans gaps
              _event("aten::mm", kernels=(1.0,), span=(0.0, 30.0))]  # host side
    intervals = breakdown.device_intervals(events)
    assert sorted(intervals) == [(0.0, 10.0), (5.0, 12.0), (20.0, 25.0)]
    assert breakdown.union_length(intervals) == 17.0
    assert breakdown.union_length([]) == 0.0


KINDS = [("aten::addmm", "gemm"), ("aten::_efficient_attention_backward", "attention"),
         ("aten::_log_softmax_backward_data", "loss"), ("aten::copy_", "copy"),
         ("Memcpy DtoD (Device -> Device)", "copy"), ("aten::rsqrt", "elementwise"),
         ("triton_poi_fused_add_mul_0", "fused"), ("## Call CompiledFxGraph fxcpjr4xg5gogqlvgtik ##", "fused"),
         ("rademacher_kernel", "kernel")]


@pytest.mark.parametrize(("name", "kind"), KINDS)
def test_operator_kinds(name: str, kind: str) -> None:
    assert breakdown.kind_of(name) == kind
