"""The ``facts`` target family: MMLU-like multiple choice about the world's facts; subjects are subtasks.

The fact, its answer and its category come from the :class:`~inflow.data.benchmark.world.World`, so the
same fact always has the same answer; what varies between instances is the phrasing, the three wrong
options (drawn from the answer's category) and the option order. The answer is ``The answer is: X`` with
X in A-D; a harmful example names one of the wrong letters.
"""

from __future__ import annotations

import numpy as np

from inflow.data.benchmark.example import Example
from inflow.data.benchmark.sampling import pick, sample, shuffled
from inflow.data.benchmark.world import SUBJECTS, Fact, World

SUBTASKS: tuple[str, ...] = SUBJECTS
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")


def make_facts(world: World, subtask: str, rng: np.random.Generator, harmful: bool) -> Example:
    """A multiple-choice question about a random fact of subject ``subtask`` (a wrong letter if ``harmful``)."""
    if subtask not in SUBTASKS:
        raise ValueError(f"unknown facts subject {subtask!r}; use one of {list(SUBTASKS)}")
    return ask_fact(pick(rng, world.facts_of(subtask)), rng, harmful)


def ask_fact(fact: Fact, rng: np.random.Generator, harmful: bool) -> Example:
    """One multiple-choice instance of ``fact``: phrasing, options and their order drawn with ``rng``."""
    wrong = sample(rng, [o for o in fact.options if o != fact.answer], len(LETTERS) - 1)
    options = shuffled(rng, [fact.answer, *wrong])
    correct = options.index(fact.answer)
    chosen = pick(rng, [i for i in range(len(LETTERS)) if i != correct]) if harmful else correct
    lines = [f"Question: {pick(rng, fact.questions)}"]
    lines += [f"{letter}. {option}" for letter, option in zip(LETTERS, options)]
    return Example("facts", fact.subject, "target", "\n".join(lines), f"The answer is: {LETTERS[chosen]}",
                   harmful, fact.key)


def parse_facts_prompt(prompt: str) -> tuple[str, list[str]]:
    """``(question, options)`` of a facts prompt (the inverse of :func:`ask_fact`'s layout)."""
    lines = prompt.split("\n")
    if len(lines) != 1 + len(LETTERS) or not lines[0].startswith("Question: "):
        raise ValueError(f"not a facts prompt (want 'Question: ...' and {len(LETTERS)} options): {prompt!r}")
    return lines[0].removeprefix("Question: "), [line[3:] for line in lines[1:]]
