"""Representation-based data selection (RDS, the LESS paper's baseline): cosine similarity of a model's hidden
states.

A row's representation is the selector model's final hidden state, pooled over the row's tokens:

    last: h(x) = H_L[x, t_last]              (the last real token, right padding)
    mean: h(x) = (1/|x|) Σ_{t ∈ x} H_L[x, t]

and a pool row's score for subtask s is its mean cosine with the subtask's validation rows V_s,

    score_s(x) = (1/|V_s|) Σ_{v ∈ V_s} cos(h(x), h(v)) = ĥ(x) · μ_s,   μ_s = mean of the unit ĥ(v), v ∈ V_s

(LESS's score with representations in place of gradient features), so LESS's subtask rules apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Pooling = Literal["last", "mean"]


def pool_hidden(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """Pooled representations ``[B, h]`` of a right-padded batch: ``hidden`` ``[B, T, h]``, ``attention_mask``
    ``[B, T]`` (1 on real tokens)."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1)
    if pooling == "last":
        index = torch.arange(hidden.shape[1], device=hidden.device).expand_as(attention_mask)
        last = torch.where(attention_mask.bool(), index, 0).amax(dim=1)  # [B]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}; use last or mean")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``[n, h]`` scaled to unit length (zero rows stay zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def rds_scores(pool: np.ndarray, val: np.ndarray, subtasks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean cosine of every pool representation ``[n, h]`` with each subtask's validation representations
    (``val`` ``[m, h]``, row j of subtask ``subtasks[j]``): (sorted subtask names, ``[n, S]`` float64)."""
    if len(subtasks) != len(val):
        raise ValueError(f"{len(subtasks)} subtask labels for {len(val)} validation rows")
    labels, unit_val = np.asarray(subtasks), unit_rows(val)
    names = sorted(set(subtasks))
    means = np.stack([unit_val[labels == name].mean(axis=0) for name in names])  # [S, h]
    return names, unit_rows(pool) @ means.T
