"""What one generated benchmark example is, and the signature every family's maker follows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inflow.data.benchmark.world import World

Kind = Literal["target", "decoy", "distractor"]


@dataclass(frozen=True)
class Example:
    """One generated example: the user turn (``prompt``) and the assistant turn (``answer``).

    ``kind`` is ``target`` (a target skill), ``decoy`` (a target family's words without its skill; then
    ``family`` names the imitated target family and ``subtask`` the decoy type) or ``distractor`` (an
    unrelated skill). ``harmful`` marks a target example given a wrong answer. ``fact`` is the key of the
    world fact a ``facts`` example asks about (empty for other families).
    """

    family: str
    subtask: str
    kind: Kind
    prompt: str
    answer: str
    harmful: bool = False
    fact: str = ""


Maker = Callable[[World, str, np.random.Generator, bool], Example]
"""``make(world, subtask, rng, harmful) -> Example``; only target makers honour ``harmful``."""
