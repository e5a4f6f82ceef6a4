"""Block-diagonal sketch of a flat gradient: one random projection per block (transformer layer), concatenated.

``phi(x) = [x_1 M_1, ..., x_B M_B]``: block ``b`` of ``D_b`` coordinates goes to ``d_b`` dims, so inner products
of whole gradients *and* of each block are preserved in expectation (LESS and Influence Distillation need the
first, In2Core's per-layer terms the second). :func:`allocate_dims` splits the target ``dim`` between blocks and
never widens; :class:`BlockSketch` owns the per-block projectors and one shared piece cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from inflow.sketch.base import IdentitySketch, Sketch, check_kind, compute_dtype, make_block_projector
from inflow.sketch.cache import DEFAULT_CACHE_BYTES, PieceCache
from inflow.sketch.sparse_jl import DEFAULT_SPARSITY

RNG_VERSION = "lowbias32-splitmix64-v1"  # recorded in the store: a change of generator invalidates old features


def _largest_remainder(sizes: Sequence[int], budget: int) -> list[int]:
    """Integer shares of ``budget`` proportional to ``sizes`` (largest remainder, ties to lower index), each >= 1."""
    total = sum(sizes)
    shares = [budget * s // total for s in sizes]
    order = sorted(range(len(sizes)), key=lambda i: (-(budget * sizes[i] % total), i))
    for i in order[: budget - sum(shares)]:
        shares[i] += 1
    for i, share in enumerate(shares):  # lift zero shares to 1, taking from the currently largest share
        if share == 0:
            donor = max(range(len(shares)), key=lambda j: (shares[j], -j))
            shares[donor] -= 1
            shares[i] = 1
    return shares


def allocate_dims(block_sizes: Sequence[int], dim: int) -> list[int]:
    """Output dims ``d_b`` per block for a total budget ``dim``; never ``d_b > D_b``.

    If ``sum(D_b) <= dim`` every block is kept whole (``d_b = D_b``; the output is then *smaller* than ``dim``).
    Otherwise ``dim`` is shared proportionally to ``D_b`` (largest remainder, each >= 1); a block no larger than its
    share is kept whole and the rest of ``dim`` is re-shared among the others, until every remaining block is
    larger than its share. The result sums to ``dim``.
    """
    sizes = list(block_sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"block sizes must be a non-empty list of positive integers, got {sizes}")
    if sum(sizes) <= dim:
        return sizes
    if dim < len(sizes):
        raise ValueError(f"sketch dim {dim} is smaller than the number of blocks {len(sizes)}: raise sketch.dim")
    dims: list[int | None] = [None] * len(sizes)
    budget, free = dim, list(range(len(sizes)))
    while True:
        shares = _largest_remainder([sizes[i] for i in free], budget)
        kept = [i for i, share in zip(free, shares) if sizes[i] <= share]
        if not kept:
            for i, share in zip(free, shares):
                dims[i] = share
            break
        for i in kept:
            dims[i] = sizes[i]
            budget -= sizes[i]
        free = [i for i in free if dims[i] is None]
    assert sum(d for d in dims if d is not None) == dim and all(d is not None for d in dims)
    return [d for d in dims if d is not None]


@dataclass(frozen=True)
class BlockLayout:
    """Where block ``index`` sits in the flat input (``in_offset``, ``in_dim``) and in the output."""

    index: int
    in_offset: int
    in_dim: int
    out_offset: int
    out_dim: int
    projected: bool  # False: the block is copied unprojected (out_dim == in_dim)


class BlockSketch:
    """A block-diagonal sketch ``[B, sum(block_sizes)] -> [B, out_dim]`` (see the module docstring).

    ``piece_bytes`` bounds each generated piece of a block's matrix (default: the kind's, 8 MiB); ``cache_bytes``
    is the budget for keeping generated pieces between calls (default 256 MiB; 0 disables caching). Results do not
    depend on either. ``device``: where projection runs (default: the device of each input). ``tf32``: the dense
    Rademacher kernel on a GPU multiplies in TF32 (an execution setting, not part of :meth:`to_attrs`: the features
    stage records it with its other extraction settings).
    """

    def __init__(
        self,
        kind: str,
        seed: int,
        block_sizes: Sequence[int],
        dim: int,
        device: torch.device | str | None = None,
        *,
        sparsity: int = DEFAULT_SPARSITY,
        piece_bytes: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        tf32: bool = False,
    ) -> None:
        check_kind(kind)
        if dim < 1:
            raise ValueError(f"sketch dim must be >= 1, got {dim}")
        if kind == "sparse_jl" and sparsity < 1:
            raise ValueError(f"sparse_jl sparsity must be >= 1, got {sparsity}")
        self.kind, self.seed, self.dim, self.sparsity, self.tf32 = kind, seed, dim, sparsity, tf32
        self.device = torch.device(device) if device is not None else None
        self.cache = PieceCache(cache_bytes)
        self.layout: list[BlockLayout] = []
        self.projectors: list[Sketch] = []
        in_offset = out_offset = 0
        for index, (size, out) in enumerate(zip(block_sizes, allocate_dims(block_sizes, dim))):
            projected = out < size
            self.layout.append(BlockLayout(index, in_offset, size, out_offset, out, projected))
            self.projectors.append(
                make_block_projector(kind, seed, index, size, out, sparsity=sparsity, piece_bytes=piece_bytes,
                                     cache=self.cache, tf32=tf32)
                if projected
                else IdentitySketch(size)
            )
            in_offset, out_offset = in_offset + size, out_offset + out

    @property
    def in_dim(self) -> int:
        """``D = sum(D_b)``, the width of the flat gradient."""
        return sum(b.in_dim for b in self.layout)

    @property
    def out_dim(self) -> int:
        """``sum(d_b)``: ``dim``, or ``D`` when the whole gradient fits in ``dim`` unprojected."""
        return sum(b.out_dim for b in self.layout)

    def project(self, x: Tensor, *, out_dtype: torch.dtype | None = torch.float32,
                executor: Executor | None = None) -> Tensor:
        """``phi(x)``: [B, D] -> [B, out_dim], block ``b`` to columns ``out_offset..out_offset+d_b``.

        Computed in float64 for float64 input, else float32; returned as ``out_dtype`` (None: the compute dtype).
        With ``executor`` the blocks are projected concurrently on its threads (the same bits: each block is one
        independent computation), so a CPU running torch at one intra-op thread still uses every core.
        """
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(
                f"expected flat gradients [B, {self.in_dim}] (the sum of the block sizes), got {tuple(x.shape)}: "
                "build the sketch from the same LoRA parameter blocks as the gradients"
            )
        x = x.to(device=self.device or x.device, dtype=compute_dtype(x.dtype))
        out = torch.empty(x.shape[0], self.out_dim, dtype=x.dtype, device=x.device)

        def one(index: int) -> None:
            block, projector = self.layout[index], self.projectors[index]
            piece = x[:, block.in_offset : block.in_offset + block.in_dim]
            out[:, block.out_offset : block.out_offset + block.out_dim] = projector.project(piece)

        if executor is None:
            for index in range(len(self.layout)):
                one(index)
        else:  # largest blocks first, so the last one to finish is a small one
            order = sorted(range(len(self.layout)), key=lambda i: -self.layout[i].in_dim * self.layout[i].out_dim)
            for future in [executor.submit(one, i) for i in order]:
                future.result()
        return out if out_dtype is None else out.to(out_dtype)

    def to_attrs(self) -> dict[str, Any]:
        """A JSON-able description (kind, seed, dim, RNG version, blocks) that the gradient store records."""
        attrs: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "dim": self.dim, "out_dim": self.out_dim,
                                 "rng": RNG_VERSION}
        if self.kind == "sparse_jl":
            attrs["sparsity"] = self.sparsity
        attrs["blocks"] = [{"in_dim": b.in_dim, "out_dim": b.out_dim, "projected": b.projected} for b in self.layout]
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], device: torch.device | str | None = None,
                   **kwargs: Any) -> BlockSketch:
        """Rebuild the sketch an attrs dict describes (e.g. to project targets like a stored pool).

        Raises ``ValueError`` when the attrs come from another random generator or another allocation rule.
        """
        if attrs.get("rng") != RNG_VERSION:
            raise ValueError(f"sketch attrs use random generator {attrs.get('rng')!r}, this code {RNG_VERSION!r}: "
                             "rerun the features stage with this version")
        sizes = [int(b["in_dim"]) for b in attrs["blocks"]]
        sketch = cls(attrs["kind"], int(attrs["seed"]), sizes, int(attrs["dim"]), device,
                     sparsity=int(attrs.get("sparsity", DEFAULT_SPARSITY)), **kwargs)
        if sketch.to_attrs() != dict(attrs):
            raise ValueError("sketch attrs do not match the layout this code allocates: rerun the features stage")
        return sketch
