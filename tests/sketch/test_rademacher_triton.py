"""The fused Rademacher kernel against the torch path's matrix: bit for bit on the signs (x = identity), and the
projection against a float64 reference, on the CPU under Triton's interpreter; on a GPU when there is one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from inflow.sketch.rademacher import RademacherSketch

pytest.importorskip("triton")


@pytest.fixture
def kernel():
    """The kernel module, interpreted on a CPU-only machine (tests/conftest.py sets TRITON_INTERPRET=1 there; a
    GPU machine runs the CUDA test below instead)."""
    import inflow.sketch.rademacher_triton as module

    if not module.INTERPRET:
        pytest.skip("TRITON_INTERPRET is not 1 (a GPU machine: see test_cuda_kernel_matches_the_cpu_path)")
    return module


def _matrix(sketch: RademacherSketch, start: int = 0, stop: int | None = None) -> torch.Tensor:
    stop = sketch.in_dim if stop is None else stop
    return sketch.matrix_rows(start, stop, torch.float32, torch.device("cpu"))[:, : sketch.out_dim]


@pytest.mark.parametrize(("in_dim", "out_dim", "block_w"), [(100, 70, 2), (64, 32, 1), (33, 129, 4)])
def test_signs_are_the_torch_paths_bit_for_bit(kernel, in_dim: int, out_dim: int, block_w: int) -> None:
    sketch = RademacherSketch(seed=11, block=3, in_dim=in_dim, out_dim=out_dim)
    out = kernel.project(torch.eye(in_dim), sketch.key, out_dim, sketch.scale, block_b=16, block_w=block_w)
    assert torch.equal(out, _matrix(sketch))  # each entry is one ±scale times 1: exact


def test_row_offset_continues_the_same_matrix(kernel) -> None:
    sketch = RademacherSketch(seed=0, block=0, in_dim=90, out_dim=40)
    out = kernel.project(torch.eye(50), sketch.key, 40, sketch.scale, row_offset=40, block_b=16)
    assert torch.equal(out, _matrix(sketch, 40, 90))


def test_projection_matches_float64_and_ignores_strides(kernel) -> None:
    sketch = RademacherSketch(seed=5, block=1, in_dim=150, out_dim=70)
    x = torch.randn(150, 9, dtype=torch.float64).t()  # non-contiguous [9, 150]
    reference = x @ _matrix(sketch).double()
    out = kernel.project(x.float(), sketch.key, 70, sketch.scale, block_b=16)
    assert out.shape == (9, 70) and torch.allclose(out.double(), reference, atol=1e-5, rtol=1e-5)


def test_half_inputs_accumulate_in_float32(kernel) -> None:
    # bfloat16 is not checked here: Triton 3.9's interpreter mis-multiplies bfloat16 dots (a plain bf16 tl.dot is
    # off by 1e10 there); the CUDA test below covers it
    sketch = RademacherSketch(seed=2, block=0, in_dim=64, out_dim=64)
    x = torch.randn(4, 64).half()
    out = kernel.project(x, sketch.key, 64, sketch.scale, ieee=False, block_b=16)
    assert torch.allclose(out, x.float() @ _matrix(sketch), atol=2e-3)


_FAR_ROWS = """
import torch
from inflow.sketch import rademacher_triton as rt
from inflow.sketch.rademacher import RademacherSketch
stride = 2**30  # row 2 starts 2**31 elements in: past int32 offsets
big = torch.empty(2 * stride + 64, dtype=torch.float16)  # virtual memory: only the rows' pages are touched
x = big.as_strided((3, 64), (stride, 1))
x.copy_(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)).half())
sketch = RademacherSketch(seed=1, block=0, in_dim=64, out_dim=32)
out = rt.project(x, sketch.key, 32, sketch.scale, ieee=False, block_b=16, block_w=1)
reference = x.float() @ sketch.matrix_rows(0, 64, torch.float32, torch.device("cpu"))[:, :32]
print((out - reference).abs().max().item())
"""


def test_rows_more_than_two_billion_elements_apart(kernel) -> None:
    """A sketch group may span more than 2**31 elements (``features.sketch_group_mib`` above 8 GiB): the kernel's
    offsets are int64. With int32 ones, row 2 here read 4 GiB before the tensor (a crash, hence a subprocess)."""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _FAR_ROWS], env=os.environ | {"TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert float(out.stdout.split()[-1]) < 2e-3


_COMPILE = """
import torch
from inflow.sketch import rademacher_triton as rt
for dtype, ieee in ((torch.float32, True), (torch.float32, False), (torch.bfloat16, False)):
    kernel = rt.compile_ahead(dtype, ieee=ieee)
    print(dtype, ieee, kernel.metadata.shared, len(kernel.asm["cubin"]))
"""


def test_the_kernel_compiles_for_an_h200_without_one() -> None:
    """What the interpreter cannot check: the kernel as a GPU builds it (sm_90, the default tiles; IEEE and TF32
    float32, bfloat16) compiles and fits an SM's shared memory. A module-level int read inside the kernel ran
    interpreted and failed only here."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _COMPILE], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line.split() for line in out.stdout.splitlines()]
    assert [line[:2] for line in lines] == [["torch.float32", "True"], ["torch.float32", "False"],
                                            ["torch.bfloat16", "False"]]
    for line in lines:
        assert 0 < int(line[2]) <= 227 * 1024 and int(line[3]) > 0  # shared bytes per program; the cubin


def test_tiles_follow_the_products_and_refuse_unknown_settings(kernel) -> None:
    assert kernel.tiles_for(torch.float32, True) == kernel.IEEE_TILES  # FFMA: registers bound the tile
    assert kernel.tiles_for(torch.float32, False) == kernel.TILES  # TF32 tensor cores
    assert kernel.tiles_for(torch.bfloat16, True) == kernel.TILES  # half inputs always multiply on tensor cores
    assert kernel.TILES["block_k"] == kernel.IEEE_TILES["block_k"]  # the products' order of summation
    with pytest.raises(TypeError, match="block_n"):
        kernel.project(torch.ones(2, 32), 1, 32, 1.0, block_n=32)


def test_compiling_ahead_refuses_the_interpreter(kernel) -> None:
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernel.compile_ahead()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_matches_the_cpu_path(dtype: torch.dtype) -> None:
    from inflow.sketch import rademacher_triton

    sketch = RademacherSketch(seed=7, block=2, in_dim=4096, out_dim=1000)
    x = torch.randn(64, 4096)
    reference = sketch.project(x.double()).float()  # the torch path (CPU, float64)
    out = rademacher_triton.project(x.to("cuda", dtype), sketch.key, 1000, sketch.scale, block_b=64, block_w=2)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(out.cpu(), reference, atol=tol * reference.abs().max().item(), rtol=0)
    assert torch.equal(rademacher_triton.project(torch.eye(128, device="cuda"), sketch.key, 1000, sketch.scale),
                       _matrix(sketch, 0, 128).cuda())
    assert sketch.project(x.cuda()).shape == (64, 1000)  # the sketch takes the fused path on CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_products_stay_within_float16_rounding_of_the_exact_projection() -> None:
    """``tf32=True`` (the features stage under bfloat16 autocast): tensor-core products, each output within a few
    float16 roundings of the float64 projection, and really another path than IEEE (other bits)."""
    from inflow.sketch import BlockSketch

    x = torch.randn(64, 20_000, generator=torch.Generator().manual_seed(3))
    reference = BlockSketch("rademacher", 5, [12_000, 8_000], 1024).project(x.double(), out_dtype=None)
    ieee = BlockSketch("rademacher", 5, [12_000, 8_000], 1024, device="cuda").project(x.cuda())
    tf32 = BlockSketch("rademacher", 5, [12_000, 8_000], 1024, device="cuda", tf32=True).project(x.cuda())
    scale = reference.abs().max().item()
    assert (ieee.cpu().double() - reference).abs().max().item() < 1e-5 * scale
    assert (tf32.cpu().double() - reference).abs().max().item() < 4 * 2**-11 * scale
    assert not torch.equal(tf32, ieee)
