"""Data: the training pool, target tasks, Tulu chat rendering with label masks, and batching.

- ``pool``: load/validate/write pool files (JSONL or Parquet, Tulu ``messages`` shape), stable example ids;
- ``targets``: target tasks (val/test splits with subtasks), our JSONL form and LESS's MMLU/BBH/TyDiQA files;
- ``render``: ``<|user|>``/``<|assistant|>`` rendering, token ids and labels (answers only);
- ``batching``: the ``Encoded`` example type, ``collate`` (right padding) and length-bucketed batches;
- ``benchmark``: the seeded synthetic benchmark generator.
"""

from inflow.data.batching import IGNORE_INDEX, Encoded, collate, length_batches, sequential_batches
from inflow.data.pool import content_hash, load_pool, pool_texts, write_pool_jsonl
from inflow.data.render import (encode_chat, encode_pool, encode_prompt, encode_prompt_answer, encode_targets,
                                render_chat, render_prompt)
from inflow.data.targets import (TargetsError, TargetTask, load_bbh, load_mmlu, load_target_split,
                                 load_target_task, load_target_tasks, load_targets, load_tydiqa, validate_targets)

__all__ = [
    "IGNORE_INDEX", "Encoded", "TargetTask", "TargetsError", "collate", "content_hash", "encode_chat", "encode_pool",
    "encode_prompt", "encode_prompt_answer", "encode_targets", "length_batches", "load_bbh", "load_mmlu", "load_pool",
    "load_target_split", "load_target_task", "load_target_tasks", "load_targets", "load_tydiqa", "pool_texts",
    "render_chat", "render_prompt", "sequential_batches", "validate_targets", "write_pool_jsonl",
]
