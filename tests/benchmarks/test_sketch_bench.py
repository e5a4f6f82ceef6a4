"""``benchmarks/sketch.py --blocks``: the calls it times are the features stage's block sketch, block for block
(the torch path here; the fused kernel under Triton's interpreter), and a CPU run prints its figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import sketch as bench  # noqa: E402

from inflow.sketch import BlockSketch  # noqa: E402


def test_blocks_are_the_block_sketchs_calls() -> None:
    x = torch.randn(5, 1000, dtype=torch.float64)
    blocks = bench.Blocks(1000, 96, 3)
    assert [sk.in_dim for sk in blocks.sketches] == [334, 333, 333] and blocks.flop(5) == 2 * 5 * 1000 * 32
    reference = BlockSketch("rademacher", 0, [334, 333, 333], 96).project(x, out_dtype=None)
    assert torch.allclose(blocks.project(x, bench._piece_walk), reference, atol=1e-12)


def test_the_fused_calls_are_the_same_projection_under_the_interpreter() -> None:
    import inflow.sketch.rademacher_triton as kernel

    if not kernel.INTERPRET:
        pytest.skip("TRITON_INTERPRET is not 1 (a GPU machine: benchmarks/sketch.py checks max_rel_gap there)")
    x = torch.randn(5, 1000)
    blocks = bench.Blocks(1000, 96, 3)
    fused = blocks.project(x, lambda xb, sk: kernel.project(xb, sk.key, sk.out_dim, sk.scale, block_b=16))
    assert torch.allclose(fused, blocks.project(x, bench._piece_walk), atol=1e-5)


def test_a_cpu_run_prints_the_torch_paths_figures(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["sketch.py", "--quick", "--blocks", "4", "--repeats", "1"])
    bench.main()
    figures = dict(pair.split("=", 1) for pair in capsys.readouterr().out.splitlines()[-1].split())
    assert figures["blocks"] == "4" and float(figures["torch_s"]) > 0 and figures["fused_s"] == "n/a"
