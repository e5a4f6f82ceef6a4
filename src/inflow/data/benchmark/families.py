"""The registry of the benchmark's families: name -> (subtasks, maker).

*Target* families are skills with a target task of the same name (``arithmetic``, ``qa``, ``facts``),
split into subtasks. *Decoys* imitate a target family's words without its skill: they are registered
under the target family they imitate, with the decoy types as subtasks. *Distractors* are unrelated
skills. The makers live in ``arithmetic.py``, ``qa.py``, ``facts.py``, ``decoys.py`` and
``distractors.py``; :mod:`inflow.data.benchmark.generate` composes the pool from this registry.
"""

from __future__ import annotations

from functools import partial

from inflow.data.benchmark import arithmetic, decoys, distractors, facts, qa
from inflow.data.benchmark.example import Maker

Registry = dict[str, tuple[tuple[str, ...], Maker]]

TARGET_FAMILIES: Registry = {
    "arithmetic": (arithmetic.SUBTASKS, arithmetic.make_arithmetic),
    "qa": (qa.SUBTASKS, qa.make_qa),
    "facts": (facts.SUBTASKS, facts.make_facts),
}
DECOY_FAMILIES: Registry = {
    family: (types, partial(decoys.make_decoy, family)) for family, types in decoys.DECOY_TYPES.items()
}
DISTRACTOR_FAMILIES: Registry = dict(distractors.DISTRACTORS)

TARGET_TASKS: dict[str, tuple[str, ...]] = {family: subtasks for family, (subtasks, _) in TARGET_FAMILIES.items()}
"""Target task -> its subtasks (a target task is named after its family)."""
