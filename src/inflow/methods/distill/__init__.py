"""Influence Distillation (Nikdan et al. 2025): JVP embeddings for every row, exact influence for a few landmark
rows, propagation from the landmarks to all rows, optimal weights (DESIGN §6). Built so far: the embeddings
(``embed``), the kernel ridge propagation (``propagate``), Adam's next step as an affine map of the gradient
(``adam``), target gradient and Hessian-vector products (``hessian``) and the second-order weight QP (``weights``)."""

from inflow.methods.distill.adam import adam_drift, adam_preconditioner
from inflow.methods.distill.embed import (
    block_parameters,
    embedding_positions,
    jvp_embeddings,
    tangent_directions,
    truncated_backbone,
)
from inflow.methods.distill.hessian import target_gradient, target_hvp
from inflow.methods.distill.propagate import (
    KernelRidge,
    fit_kernel_ridge,
    kernel_matrix,
    median_bandwidth,
)
from inflow.methods.distill.weights import QPSolution, convexify, second_order_weights

__all__ = ["KernelRidge", "QPSolution", "adam_drift", "adam_preconditioner", "block_parameters", "convexify",
           "embedding_positions", "fit_kernel_ridge", "jvp_embeddings", "kernel_matrix", "median_bandwidth",
           "second_order_weights", "tangent_directions", "target_gradient", "target_hvp", "truncated_backbone"]
