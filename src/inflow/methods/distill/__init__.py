"""Influence Distillation (Nikdan et al. 2025): JVP embeddings for every row, exact influence for a few landmark
rows, propagation from the landmarks to all rows, optimal weights (DESIGN §6). Built so far: the embeddings (``embed``) and the kernel ridge propagation (``propagate``)."""

from inflow.methods.distill.embed import (block_parameters, embedding_positions, jvp_embeddings, tangent_directions,
                                          truncated_backbone)
from inflow.methods.distill.propagate import KernelRidge, fit_kernel_ridge, kernel_matrix, median_bandwidth

__all__ = ["KernelRidge", "block_parameters", "embedding_positions", "fit_kernel_ridge", "jvp_embeddings",
           "kernel_matrix", "median_bandwidth", "tangent_directions", "truncated_backbone"]
