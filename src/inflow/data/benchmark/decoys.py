"""Lexical decoys: rows that reuse a target family's words (names, places, items, numbers, passage text,
question words) without its skill or its answer format.

A decoy takes the text of a real target example and asks for something that only needs copying or
counting: reverse the words, write them in capitals, count them, list the numbers, copy a sentence, sort
the options. Surface matching (BM25) sees the target's words and is tempted; the gradient of the answer
(reversed or capitalised text, a count) should look nothing like the target skill's. A decoy's ``family``
is the target family it imitates, its ``subtask`` the decoy type.
"""

from __future__ import annotations

import re

import numpy as np

from inflow.data.benchmark.arithmetic import SUBTASKS as ARITHMETIC_SUBTASKS
from inflow.data.benchmark.arithmetic import make_arithmetic
from inflow.data.benchmark.example import Example
from inflow.data.benchmark.facts import SUBTASKS as FACTS_SUBTASKS
from inflow.data.benchmark.facts import make_facts, parse_facts_prompt
from inflow.data.benchmark.qa import make_passage
from inflow.data.benchmark.sampling import pick, sample
from inflow.data.benchmark.world import World

_SHARED = ("reverse_words", "uppercase", "count_words")
DECOY_TYPES: dict[str, tuple[str, ...]] = {
    "arithmetic": (*_SHARED, "list_numbers"),
    "qa": (*_SHARED, "copy_sentence"),
    "facts": (*_SHARED, "sort_options"),
}
_ORDINALS = ("first", "second", "third")


def make_decoy(family: str, world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """A decoy of type ``subtask`` built from a fresh example of target ``family`` (``harmful`` is ignored)."""
    if subtask not in DECOY_TYPES.get(family, ()):
        raise ValueError(f"unknown decoy {family}/{subtask}; use one of {DECOY_TYPES}")
    text = _source_text(family, world, rng)
    if subtask == "reverse_words":
        return _decoy(family, subtask, f"Repeat these words in reverse order: {text}", " ".join(text.split()[::-1]))
    if subtask == "uppercase":
        return _decoy(family, subtask, f"Write this in capital letters: {text}", text.upper())
    if subtask == "count_words":
        return _decoy(family, subtask, f"Count the words in: {text}", f"There are {len(text.split())} words.")
    if subtask == "list_numbers":
        return _decoy(family, subtask, f"List the numbers in: {text}", ", ".join(re.findall(r"\d+", text)))
    if subtask == "copy_sentence":
        return _copy_sentence(world, rng)
    return _sort_options(world, rng)


def _decoy(family: str, subtask: str, prompt: str, answer: str) -> Example:
    return Example(family, subtask, "decoy", prompt, answer)


def _source_text(family: str, world: World, rng: np.random.Generator) -> str:
    """Words of a target example: an arithmetic question, two passage sentences, or a facts question."""
    if family == "arithmetic":
        return make_arithmetic(world, pick(rng, ARITHMETIC_SUBTASKS), rng, False).prompt
    if family == "qa":
        _, sentences = make_passage(world, rng)
        start = int(rng.integers(len(sentences) - 1))
        return " ".join(sentences[start:start + 2])
    question, _ = parse_facts_prompt(make_facts(world, pick(rng, FACTS_SUBTASKS), rng, False).prompt)
    return question


def _copy_sentence(world: World, rng: np.random.Generator) -> Example:
    _, sentences = make_passage(world, rng)
    start = int(rng.integers(len(sentences) - 2))
    chosen = sentences[start:start + 3]
    k = int(rng.integers(3))
    prompt = f"Copy the {_ORDINALS[k]} sentence of this text: {' '.join(chosen)}"
    return _decoy("qa", "copy_sentence", prompt, chosen[k])


def _sort_options(world: World, rng: np.random.Generator) -> Example:
    question, options = parse_facts_prompt(make_facts(world, pick(rng, FACTS_SUBTASKS), rng, False).prompt)
    options = sample(rng, options, len(options))
    prompt = f"Sort the options of this question alphabetically. {question} {', '.join(options)}"
    return _decoy("facts", "sort_options", prompt, ", ".join(sorted(options)))
