"""LoRA training and its checkpoints.

- ``loop``: the explicit AdamW LoRA loop (warmup, target fine-tuning) and the demo's causal-LM pretraining.
- ``checkpoint``: Hugging Face Trainer checkpoint layout I/O (adapter, ``optimizer.pt``/``optimizer.bin``,
  ``trainer_state.json``), the optimizer-slot -> LoRA-parameter mapping and LESS's per-checkpoint learning rate.
"""
