"""Block-diagonal random projections of per-example gradient features.

- ``block``: :func:`allocate_dims`, :class:`BlockLayout`, :class:`BlockSketch` (what callers use).
- ``base``: the per-block :class:`Sketch` protocol and :func:`make_block_projector`; which kind to pick.
- ``rademacher``, ``sparse_jl``, ``hadamard``: the projectors. ``dense``: the explicit matrices (test oracle).
- ``counter_rng``: device-independent counter-based random bits; ``cache``: the byte-budgeted piece cache.
- ``groups``: :class:`SketchGroups`, which gathers several batches' features per ``project`` call (far cheaper
  per row for the dense sketch).
"""

from inflow.sketch.base import KINDS, Sketch, make_block_projector
from inflow.sketch.block import BlockLayout, BlockSketch, allocate_dims
from inflow.sketch.dense import dense_block_matrix, dense_sketch_matrix
from inflow.sketch.groups import SketchGroups

__all__ = [
    "KINDS",
    "BlockLayout",
    "BlockSketch",
    "Sketch",
    "SketchGroups",
    "allocate_dims",
    "dense_block_matrix",
    "dense_sketch_matrix",
    "make_block_projector",
]
