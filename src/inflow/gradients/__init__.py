"""Per-example LoRA gradients and the features built from them (DESIGN §4).

- ``blocks``: the LoRA parameters in flat order (``lora_parameters``) and their per-layer blocks (``lora_blocks``).
- ``per_example``: ``example_losses`` (the one loss), ``per_example_grads`` (batched, hooks; use this) and
  ``per_example_grads_loop`` (one backward per example; the test reference).
- ``features``: ``sgd_features`` for target rows, ``adam_features`` for pool rows.
"""

from inflow.gradients.blocks import GradBlock, lora_blocks, lora_parameters
from inflow.gradients.features import adam_features, sgd_features
from inflow.gradients.per_example import example_losses, per_example_grads, per_example_grads_loop

__all__ = [
    "GradBlock",
    "adam_features",
    "example_losses",
    "lora_blocks",
    "lora_parameters",
    "per_example_grads",
    "per_example_grads_loop",
    "sgd_features",
]
