"""The ``qa`` target family: extractive QA over a short passage (SQuAD/TyDiQA-like).

A passage describes two people of the world with four sentences each (where they live, where they
work, what they sell, where they went in which month); values are drawn fresh for every passage, so the
answer must be read from it, not remembered. Subtasks are question types. The answer is the exact span
of the passage; a harmful example answers with the *other* person's span of the same kind (still a span,
but the wrong one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inflow.data.benchmark.example import Example
from inflow.data.benchmark.sampling import pick, sample, shuffled
from inflow.data.benchmark.world import ITEMS, MONTHS, WORKPLACES, World

SUBTASKS: tuple[str, ...] = ("where", "who", "what", "when")


@dataclass(frozen=True)
class Person:
    """What a passage says about one person."""

    name: str
    home: str
    workplace: str
    goods: str
    month: str
    visited: str

    def sentences(self, rng: np.random.Generator) -> list[str]:
        """The four sentences stating this person's attributes, in random order."""
        return shuffled(rng, [
            f"{self.name} lives in {self.home}.",
            f"{self.name} works at the {self.workplace}.",
            f"{self.name} sells {self.goods}.",
            f"In {self.month}, {self.name} visited {self.visited}.",
        ])


def make_passage(world: World, rng: np.random.Generator) -> tuple[list[Person], list[str]]:
    """Two people with distinct attribute values, and the passage sentences (grouped by person)."""
    names = sample(rng, world.people, 2)
    towns = sample(rng, world.cities, 4)
    works, goods, months = sample(rng, WORKPLACES, 2), sample(rng, ITEMS, 2), sample(rng, MONTHS, 2)
    people = [Person(names[i], towns[i], works[i], goods[i], months[i], towns[2 + i]) for i in range(2)]
    return people, people[0].sentences(rng) + people[1].sentences(rng)


def make_qa(world: World, subtask: str, rng: np.random.Generator, harmful: bool) -> Example:
    """A passage, a question of type ``subtask`` about it, and the answer span (the wrong span if ``harmful``)."""
    if subtask not in SUBTASKS:
        raise ValueError(f"unknown qa subtask {subtask!r}; use one of {list(SUBTASKS)}")
    people, sentences = make_passage(world, rng)
    asked = int(rng.integers(2))
    question, attribute = _question(subtask, people[asked], rng)
    answer = getattr(people[1 - asked] if harmful else people[asked], attribute)
    prompt = f"Passage: {' '.join(sentences)} Question: {question}"
    return Example("qa", subtask, "target", prompt, answer, harmful)


def _question(subtask: str, person: Person, rng: np.random.Generator) -> tuple[str, str]:
    """A question about ``person`` and the :class:`Person` attribute that answers it."""
    p = person
    choices = {
        "where": [(f"Where does {p.name} live?", "home"), (f"Where did {p.name} go in {p.month}?", "visited")],
        "who": [(f"Who works at the {p.workplace}?", "name"), (f"Who sells {p.goods}?", "name"),
                (f"Who lives in {p.home}?", "name")],
        "what": [(f"What does {p.name} sell?", "goods")],
        "when": [(f"When did {p.name} visit {p.visited}?", "month"),
                 (f"In which month did {p.name} visit {p.visited}?", "month")],
    }[subtask]
    return pick(rng, choices)
