"""DataInf's closed-form inverse-Hessian-vector product, per layer block, streamed over a gradient store (In2Core).

DataInf (Kwon et al. 2024) approximates each layer block l's damped Hessian inverse by the mean of rank-one
inverses of the training gradients g_{l,i} (``[D_l]``, i = 1..n), which Sherman–Morrison gives in closed form:

    (H_l + λ_l I)⁻¹ ≈ (1/n) Σ_i (g_{l,i} g_{l,i}ᵀ + λ_l I)⁻¹
                    = (1/(n λ_l)) Σ_i (I − g_{l,i} g_{l,i}ᵀ / (λ_l + ‖g_{l,i}‖²))

so for a target gradient v_l (one test row's, or a task's mean)

    h_l = (1/(n λ_l)) Σ_i (v_l − c_i g_{l,i}),   c_i = (v_l · g_{l,i}) / (λ_l + ‖g_{l,i}‖²)
        = (v_l − (1/n) Σ_i c_i g_{l,i}) / λ_l

with per-block damping λ_l = scale · mean_i ‖g_{l,i}‖² / D_l (DataInf's default scale 0.1; D_l the block's
parameter count). The influence of training row z on the target is

    I(z) = −Σ_{l ∈ kept} h_l · g_{l,z}

(the first-order change of the target loss when z is up-weighted: **negative = helpful**, z is a *proponent*).

Only inner products of g within a block appear, so the block-diagonal sketch of the gradient store (each layer
projected on its own, DESIGN §4) serves: a stored row's block l is P_l g_l, and ‖P_l g_l‖, P_l v · P_l g keep
the values within the JL tolerance. Every target row is a column, so one pass over the store serves all of
them; I is linear in v, so a task's mean influence is the mean of its rows' influences.

Three streamed passes over the rows (chunks ``[c, d]``, never the whole store): squared block norms (λ),
Σ_i c_i g_i (h), then influences ``[c, m]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

DATAINF_SCALE = 0.1  # λ_l = 0.1 · mean ‖g_l‖² / D_l, DataInf's default


@dataclass(frozen=True)
class Blocks:
    """Where each layer block sits in a stored row: block b is columns ``[starts[b], starts[b] + widths[b])``,
    projected from ``in_dims[b]`` parameters."""

    starts: tuple[int, ...]
    widths: tuple[int, ...]
    in_dims: tuple[int, ...]

    @classmethod
    def from_sketch(cls, sketch: Mapping[str, Any]) -> Blocks:
        """The layout a store's sketch attrs record (``BlockSketch.to_attrs()``)."""
        widths = [int(b["out_dim"]) for b in sketch["blocks"]]
        return cls(tuple(int(s) for s in np.cumsum([0, *widths[:-1]])), tuple(widths),
                   tuple(int(b["in_dim"]) for b in sketch["blocks"]))

    @classmethod
    def whole(cls, sizes: Sequence[int]) -> Blocks:
        """Unprojected blocks of the given sizes (raw gradients: width = parameter count)."""
        return cls(tuple(int(s) for s in np.cumsum([0, *sizes[:-1]])), tuple(sizes), tuple(sizes))

    def __len__(self) -> int:
        return len(self.widths)

    @property
    def dim(self) -> int:
        return self.starts[-1] + self.widths[-1]

    def slice(self, b: int) -> slice:
        return slice(self.starts[b], self.starts[b] + self.widths[b])

    def subset(self, kept: Sequence[int]) -> Blocks:
        """The layout of blocks ``kept`` alone, packed side by side (rows restricted to :meth:`columns`)."""
        widths = [self.widths[b] for b in kept]
        return Blocks(tuple(int(s) for s in np.cumsum([0, *widths[:-1]])), tuple(widths),
                      tuple(self.in_dims[b] for b in kept))

    def columns(self, kept: Sequence[int]) -> np.ndarray:
        """The stored columns of blocks ``kept`` (int64 ``[Σ widths]``), in block order."""
        return np.concatenate([np.arange(self.starts[b], self.starts[b] + self.widths[b]) for b in kept])


def block_sq_norms(g: Tensor, blocks: Blocks) -> Tensor:
    """``[c, B]``: ‖g_{l,i}‖² of every row of ``g`` ``[c, d]`` and block l."""
    return torch.stack([g[:, blocks.slice(b)].pow(2).sum(1) for b in range(len(blocks))], dim=1)


def dampings(sq_norm_sum: Tensor, n: int, blocks: Blocks, scale: float = DATAINF_SCALE) -> Tensor:
    """``[B]``: λ_l = scale · (Σ_i ‖g_{l,i}‖² / n) / D_l, from the column sums of :func:`block_sq_norms`."""
    in_dims = torch.tensor(blocks.in_dims, dtype=sq_norm_sum.dtype)
    lam = scale * sq_norm_sum / n / in_dims
    if bool((lam <= 0).any()):
        raise ValueError("a layer block has zero gradient on every training row, so its DataInf damping is 0: "
                         "leave that block out (in2core.layers) or check the checkpoint")
    return lam


def sherman_morrison_sum(g: Tensor, v: Tensor, sq: Tensor, lam: Tensor, blocks: Blocks) -> Tensor:
    """``[m, d]``: Σ_i c_{i,j,l} g_{l,i} over the rows of ``g`` ``[c, d]``, per target ``v`` ``[m, d]`` and block,
    with c_{i,j,l} = (v_{l,j} · g_{l,i}) / (λ_l + ‖g_{l,i}‖²) (``sq`` ``[c, B]`` from :func:`block_sq_norms`)."""
    out = torch.zeros_like(v)
    for b in range(len(blocks)):
        cols = blocks.slice(b)
        c = (g[:, cols] @ v[:, cols].T) / (lam[b] + sq[:, b, None])  # [c, m]
        out[:, cols] = c.T @ g[:, cols]
    return out


@dataclass(frozen=True)
class DataInfFit:
    """The inverse-Hessian-vector products of m targets: ``h`` ``[m, d]`` (block l in block l's columns), the
    dampings ``lam`` ``[B]`` and the number of training rows ``n`` they came from."""

    h: Tensor
    lam: Tensor
    n: int

    def influence(self, g: Tensor, columns: np.ndarray | None = None) -> Tensor:
        """``[c, m]``: I(z) = −Σ_l h_l · g_{l,z} for rows ``g`` ``[c, d]``, over every block, or only the stored
        ``columns`` of the kept blocks (:meth:`Blocks.columns`)."""
        if columns is None:
            return -(g @ self.h.T)
        index = torch.from_numpy(columns)
        return -(g[:, index] @ self.h[:, index].T)


def fit_datainf(chunks: Callable[[], Iterable[Tensor]], v: Tensor, blocks: Blocks,
                scale: float = DATAINF_SCALE) -> DataInfFit:
    """DataInf's h for every target row of ``v`` ``[m, d]``, with the training rows streamed twice from
    ``chunks()`` (each call a fresh iterable of ``[c, d]`` tensors in ``v``'s dtype): once for the dampings,
    once for Σ_i c_i g_i. h_l = (v_l − (1/n) Σ_i c_i g_{l,i}) / λ_l (module docstring)."""
    sq_sum, n = torch.zeros(len(blocks), dtype=v.dtype), 0
    for g in chunks():
        sq_sum += block_sq_norms(g, blocks).sum(0)
        n += g.shape[0]
    if n == 0:
        raise ValueError("no training rows: DataInf needs the pool's gradients")
    lam = dampings(sq_sum, n, blocks, scale)
    acc = torch.zeros_like(v)
    for g in chunks():
        acc += sherman_morrison_sum(g, v, block_sq_norms(g, blocks), lam, blocks)
    h = v - acc / n
    for b in range(len(blocks)):
        h[:, blocks.slice(b)] /= lam[b]
    return DataInfFit(h, lam, n)
