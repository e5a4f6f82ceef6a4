"""Held-out evaluation of a (fine-tuned) model on a target task's test split."""

from inflow.evaluation.metrics import evaluate_split, normalize_answer

__all__ = ["evaluate_split", "normalize_answer"]
