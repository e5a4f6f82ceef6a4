"""LESS (Xia et al. 2024): checkpoint-weighted cosine matching of Adam-preconditioned training gradients
against validation gradients, max over subtasks."""

from inflow.methods.less.scoring import checkpoint_weights, less_scores, subtask_means

__all__ = ["checkpoint_weights", "less_scores", "subtask_means"]
