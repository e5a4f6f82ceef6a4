"""Held-out evaluation of a (fine-tuned) model on a target task's test split.

- ``metrics``: ``evaluate_split`` (answer-token loss and greedy exact match per split and subtask);
- ``generation``: the generation budget (``evaluate.max_new_tokens``, 0 = auto) and left-padded greedy decoding.
"""

from inflow.evaluation.generation import AUTO_MARGIN, answer_lengths, generate_answers, generation_budget
from inflow.evaluation.metrics import answer_losses, evaluate_split, normalize_answer

__all__ = ["AUTO_MARGIN", "answer_lengths", "answer_losses", "evaluate_split", "generate_answers",
           "generation_budget", "normalize_answer"]
