"""The per-block projector interface and the factory that builds one by kind.

A block projector maps ``x [B, in_dim] -> x @ M [B, out_dim]`` for a random matrix ``M [in_dim, out_dim]`` that is
a pure function of ``(kind, seed, block, in_dim, out_dim)`` (see ``counter_rng``) and scaled so that
``E[<xM, yM>] = <x, y>``. Implementations, cheapest first on CPU:

- ``hadamard`` (:class:`HadamardSketch`): randomized Hadamard, ``O(B N log N)``; the default choice for speed.
- ``sparse_jl`` (:class:`SparseJLSketch`): CountSketch with ``s`` nonzeros per input, ``O(B n s)``.
- ``rademacher`` (:class:`RademacherSketch`): dense ±1/sqrt(d), ``O(B n d)``; LESS/TRAK parity.
- :class:`IdentitySketch`: a block stored unprojected (never widen; see ``block.allocate_dims``).

``dense.dense_block_matrix`` builds the explicit ``M`` of every kind: the test oracle for the fast paths.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from inflow.sketch.cache import PieceCache
from inflow.sketch.hadamard import HadamardSketch
from inflow.sketch.rademacher import RademacherSketch
from inflow.sketch.sparse_jl import DEFAULT_SPARSITY, SparseJLSketch

KINDS = ("rademacher", "sparse_jl", "hadamard")


class Sketch(Protocol):
    """A per-block projector: ``project(x [B, in_dim]) -> [B, out_dim]`` in the dtype of ``x`` (float32/float64)."""

    kind: str
    in_dim: int
    out_dim: int

    def project(self, x: Tensor) -> Tensor: ...


class IdentitySketch:
    """An unprojected block: ``project(x) = x`` (``out_dim == in_dim``)."""

    kind = "identity"

    def __init__(self, in_dim: int) -> None:
        self.in_dim = in_dim
        self.out_dim = in_dim

    def project(self, x: Tensor) -> Tensor:
        """``x`` itself: [B, in_dim] -> [B, in_dim]."""
        assert x.dim() == 2 and x.shape[1] == self.in_dim
        return x


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 input is projected in float64; everything else (float32, bf16, fp16) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` naming the valid kinds unless ``kind`` is one."""
    if kind not in KINDS:
        raise ValueError(f"unknown sketch kind {kind!r}: set sketch.kind to one of {', '.join(KINDS)}")


def make_block_projector(
    kind: str,
    seed: int,
    block: int,
    in_dim: int,
    out_dim: int,
    *,
    sparsity: int = DEFAULT_SPARSITY,
    piece_bytes: int | None = None,
    cache: PieceCache | None = None,
    tf32: bool = False,
) -> Sketch:
    """The projector of block ``block``: ``kind`` maps ``in_dim`` to ``out_dim`` coordinates (``out_dim < in_dim``).

    ``sparsity`` is used by ``sparse_jl`` only; ``piece_bytes`` bounds each generated piece (default: the kind's);
    ``cache`` keeps generated pieces for reuse (default: none); ``tf32``: ``rademacher``'s fused GPU kernel
    multiplies in TF32 rather than IEEE float32.
    """
    check_kind(kind)
    if not 1 <= out_dim <= in_dim:
        raise ValueError(f"a block projector maps in_dim >= out_dim >= 1, got {in_dim} -> {out_dim}")
    extra = {} if piece_bytes is None else {"piece_bytes": piece_bytes}
    if kind == "rademacher":
        return RademacherSketch(seed, block, in_dim, out_dim, cache=cache, tf32=tf32, **extra)
    if kind == "sparse_jl":
        return SparseJLSketch(seed, block, in_dim, out_dim, sparsity=sparsity, cache=cache, **extra)
    return HadamardSketch(seed, block, in_dim, out_dim, cache=cache, **extra)
