"""The pretraining corpus: plain descriptive sentences about the world (no question/answer format).

Every document mixes one or two fact statements with a few sentences about places, people and
quantities. Fact statements are dealt from a reshuffled cycle over all facts, so with at least
``len(world.facts)`` documents every fact of the ``facts`` task is stated at least once.
"""

from __future__ import annotations

import numpy as np

from inflow.data.benchmark.sampling import pick, shuffled
from inflow.data.benchmark.world import CONTAINERS, ITEMS, MONTHS, WORKPLACES, World


def generate_corpus(world: World, n_docs: int, rng: np.random.Generator) -> list[str]:
    """``n_docs`` short documents (2-5 sentences, roughly 10-40 words) about ``world``."""
    statements: list[str] = []
    docs: list[str] = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(1, 3))):
            if not statements:  # deal the next round of the cycle
                statements = shuffled(rng, [f.statement for f in world.facts])
            sentences.append(statements.pop())
        sentences += [_describe(world, rng) for _ in range(int(rng.integers(1, 4)))]
        docs.append(" ".join(shuffled(rng, sentences)))
    return docs


def _describe(world: World, rng: np.random.Generator) -> str:
    """One random descriptive sentence: a place, a person, or a quantity."""
    person, city = pick(rng, world.people), pick(rng, world.cities)
    count = int(rng.integers(2, 21))
    i = int(rng.integers(len(world.countries)))
    options = (
        f"{world.towns[2 * i + 1]} is a town in {world.countries[i]}.",
        f"{world.capitals[i]} is a city in {world.countries[i]}.",
        f"{person} lives in {city}.",
        f"{person} works at the {pick(rng, WORKPLACES)} in {city}.",
        f"{person} sells {pick(rng, ITEMS)} at the market.",
        f"In {pick(rng, MONTHS)}, {person} visited {city}.",
        f"{person} has {count} {pick(rng, ITEMS)}.",
        f"There are {count} {pick(rng, ITEMS)} in the {pick(rng, CONTAINERS)}.",
        f"{pick(rng, world.founders)} was a ruler long ago.",
    )
    return pick(rng, options)
