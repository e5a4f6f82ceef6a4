"""``benchmarks/sketch_sass.py``: the fused Rademacher kernel compiled for sm_90 (and sm_80) here, no GPU: its main
loop found in the SASS, its tensor products counted, and the transposed bit-major sign layout generating each word's
signs from one hash (the natural layout rehashed per sign)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sketch_sass.py"


def _run(*args: str) -> list[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a compiled kernel, not interpreted
    out = subprocess.run([sys.executable, "-W", "ignore", str(SCRIPT), *args], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return [dict(pair.split("=", 1) for pair in line.split()) for line in out.stdout.splitlines()]


def test_the_default_tiles_hash_once_per_word_and_do_not_spill() -> None:
    from inflow.sketch.rademacher_triton import TILES

    ours, natural, ratio = _run("--natural")
    assert ours["kernel"] == "ours" and natural["kernel"] == "natural"
    tile_macs = TILES["block_b"] * TILES["block_k"] * TILES["block_w"] * 32
    for figures in (ours, natural):
        assert int(figures["tensor_macs"]) == tile_macs  # one step of the loop: the tile's products, no more
        assert int(figures["spill_bytes"]) == 0  # no spills
        assert 0 < int(figures["shared_bytes"]) <= 227 * 1024
    # 32 signs per hashed word against a hash per sign: several times fewer instructions per sign
    assert float(natural["instructions_per_sign"]) > 2 * float(ours["instructions_per_sign"])
    assert float(ratio["natural_over_ours_instructions_per_sign"]) > 2
    assert float(ours["issue_over_tensor_cycles"]) < 1  # TILES' reason: the products, not the signs, bound a step


def test_ieee_products_take_tiles_that_do_not_spill() -> None:
    from inflow.sketch.rademacher_triton import IEEE_TILES

    (figures,) = _run("--ieee")  # FFMA on the CUDA cores: accumulator and operands in registers
    assert {k: int(figures[k]) for k in IEEE_TILES} == IEEE_TILES
    assert int(figures["tensor_macs"]) == 0 and "FFMA" in figures["top"]
    assert int(figures["spill_bytes"]) == 0  # TILES (4 warps, 128 columns) spill 1,728 bytes here


def test_ampere_products_are_counted_per_warp() -> None:
    from inflow.sketch.rademacher_triton import TILES

    (figures,) = _run("--capability", "80")  # mma.sync (HMMA) per warp instead of Hopper's warpgroup HGMMA
    assert int(figures["tensor_macs"]) == TILES["block_b"] * TILES["block_k"] * TILES["block_w"] * 32
    assert "HMMA" in figures["top"] and int(figures["spill_bytes"]) == 0


def test_the_natural_layout_is_the_same_matrix_under_the_interpreter() -> None:
    """The former layout, which ``sketch.py`` times beside the kernel on a GPU, projects with the same matrix: the
    identity's projection is every sign in its place, exactly (in this process: Triton's interpreter)."""
    import inflow.sketch.rademacher_triton as kernel

    if not kernel.INTERPRET:
        pytest.skip("TRITON_INTERPRET is not 1 (a GPU machine)")
    sys.path.insert(0, str(SCRIPT.parent))
    import torch
    from sketch_sass import natural_kernel

    from inflow.sketch.rademacher import RademacherSketch

    sketch = RademacherSketch(seed=4, block=1, in_dim=70, out_dim=100)
    eye = torch.eye(70)
    ours = kernel.project(eye, sketch.key, 100, sketch.scale, block_b=16)
    natural = kernel.project(eye, sketch.key, 100, sketch.scale, block_b=16, kernel=natural_kernel)
    assert torch.equal(natural, ours)
    assert torch.equal(ours, sketch.matrix_rows(0, 70, torch.float32, torch.device("cpu"))[:, :100])


def test_the_sweeps_grid_starts_at_the_default_and_holds_each_configuration_once() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from sketch_sass import tile_grid

    from inflow.sketch.rademacher_triton import IEEE_TILES, TILES

    for default in (TILES, IEEE_TILES):  # both defaults lie in the grid: 32 configurations, the default first
        grid = tile_grid(default)
        assert grid[0] == default and len(grid) == 32
        assert len({tuple(sorted(tiles.items())) for tiles in grid}) == 32
    assert tile_grid({**TILES, "block_b": 256})[0]["block_b"] == 256  # a default off the grid is tried too
    assert len(tile_grid({**TILES, "block_b": 256})) == 33
