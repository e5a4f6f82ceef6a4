"""The ``arithmetic`` target family: GSM-like word problems with a worked answer.

Small numbers (the models are tiny), the world's people and items, two phrasings per subtask. The numbers
appear in the question in the order the worked answer uses them, so ``re.findall(r"\\d+", question)``
recovers the operands. A harmful example keeps the question and gets a wrong result, written consistently
in the last worked step and in ``The answer is N.``.
"""

from __future__ import annotations

import numpy as np

from inflow.data.benchmark.example import Example
from inflow.data.benchmark.sampling import pick, sample
from inflow.data.benchmark.world import CONTAINERS, ITEMS, World

SUBTASKS: tuple[str, ...] = ("add", "subtract", "multiply", "two_step")

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "{p} has {a} {item} and buys {b} more. How many {item} does {p} have?",
        "{p} has {a} {item}. {q} gives {p} {b} more {item}. How many {item} does {p} have now?",
    ),
    "subtract": (
        "{p} has {a} {item} and gives {b} to {q}. How many {item} does {p} have left?",
        "{p} has {a} {item} and sells {b} of them. How many {item} does {p} have now?",
    ),
    "multiply": (
        "{p} has {a} {box} with {b} {item} in each. How many {item} does {p} have?",
        "{p} fills {a} {box} with {b} {item} each. How many {item} are there in all?",
    ),
    "two_step": (
        "{p} has {a} {item}, buys {b} more and gives {c} to {q}. How many {item} does {p} have now?",
        "{p} has {a} {item}. {p} finds {b} more and then loses {c}. How many {item} does {p} have?",
    ),
}


def make_arithmetic(world: World, subtask: str, rng: np.random.Generator, harmful: bool) -> Example:
    """A word problem of ``subtask`` and its worked answer (a wrong result when ``harmful``)."""
    if subtask not in _TEMPLATES:
        raise ValueError(f"unknown arithmetic subtask {subtask!r}; use one of {list(SUBTASKS)}")
    p, q = sample(rng, world.people, 2)
    operands = _operands(subtask, rng)
    a, b, c = (*operands, 0)[:3]
    question = pick(rng, _TEMPLATES[subtask]).format(
        p=p, q=q, a=a, b=b, c=c, item=pick(rng, ITEMS), box=pick(rng, CONTAINERS))
    steps = worked_steps(subtask, operands)
    if harmful:
        steps[-1] = (steps[-1][0], _wrong(steps[-1][1], rng))
    answer = " ".join(f"{expr} = {value}." for expr, value in steps) + f" The answer is {steps[-1][1]}."
    return Example("arithmetic", subtask, "target", question, answer, harmful)


def solve(subtask: str, operands: list[int]) -> int:
    """The correct result of ``subtask`` on ``operands`` (in question order)."""
    return worked_steps(subtask, operands)[-1][1]


def worked_steps(subtask: str, operands: list[int]) -> list[tuple[str, int]]:
    """The worked answer as ``(expression, value)`` steps, e.g. ``[("4 + 7", 11)]``."""
    if subtask == "add":
        a, b = operands
        return [(f"{a} + {b}", a + b)]
    if subtask == "subtract":
        a, b = operands
        return [(f"{a} - {b}", a - b)]
    if subtask == "multiply":
        a, b = operands
        return [(f"{a} * {b}", a * b)]
    if subtask == "two_step":
        a, b, c = operands
        return [(f"{a} + {b}", a + b), (f"{a + b} - {c}", a + b - c)]
    raise ValueError(f"unknown arithmetic subtask {subtask!r}; use one of {list(SUBTASKS)}")


def _operands(subtask: str, rng: np.random.Generator) -> list[int]:
    def draw(low: int, high: int) -> int:  # inclusive bounds
        return int(rng.integers(low, high + 1))

    if subtask == "add":
        return [draw(2, 20), draw(1, 20)]
    if subtask == "subtract":
        a = draw(3, 20)
        return [a, draw(1, a - 1)]
    if subtask == "multiply":
        return [draw(2, 9), draw(2, 9)]
    a, b = draw(2, 15), draw(1, 15)
    return [a, b, draw(1, a + b - 1)]


def _wrong(value: int, rng: np.random.Generator) -> int:
    """A nearby wrong result (off by 1 to 3, never negative)."""
    offsets = [d for d in (-3, -2, -1, 1, 2, 3) if value + d >= 0]
    return value + pick(rng, offsets)
