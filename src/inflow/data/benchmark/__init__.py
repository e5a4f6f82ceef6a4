"""The built-in synthetic "skills" benchmark: a seeded world, a training pool with ground-truth metadata
(target skills, lexical decoys, distractors, harmful rows), three target tasks and a pretraining corpus.

Entry point: :func:`generate_benchmark` (``generate.py``). The world and its facts live in ``world.py``;
the families' makers in ``arithmetic.py``, ``qa.py``, ``facts.py``, ``decoys.py`` and ``distractors.py``,
registered in ``families.py``; the corpus in ``corpus.py``.
"""

from inflow.data.benchmark.families import TARGET_TASKS
from inflow.data.benchmark.generate import benchmark_world, generate_benchmark, plan_pool, split_sizes
from inflow.data.benchmark.world import World, build_world

__all__ = [
    "TARGET_TASKS", "World", "benchmark_world", "build_world", "generate_benchmark", "plan_pool", "split_sizes",
]
