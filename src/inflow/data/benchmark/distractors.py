"""Distractor families: unrelated skills over their own small vocabulary (no target words).

``reverse_list``, ``sort_numbers``, ``cipher`` (shift letters), ``small_talk`` and ``count_words``, each
with two subtasks. They fill the pool so that selection has something to reject besides decoys.
"""

from __future__ import annotations

import numpy as np

from inflow.data.benchmark.example import Example, Maker
from inflow.data.benchmark.sampling import pick, sample
from inflow.data.benchmark.world import World

WORDS: tuple[str, ...] = (
    "sun", "moon", "star", "cloud", "rain", "wind", "snow", "leaf", "tree", "bird", "frog", "ship",
    "road", "door", "chair", "table", "bell", "drum", "kite", "ring", "milk", "song", "dance", "sock",
)
NAMES: tuple[str, ...] = ("Ben", "Ann", "Sam", "Liz", "Tom", "Eva", "Max", "Zoe", "Leo", "Amy", "Dan", "Ivy")
_GREETINGS = ("Hi", "Hello", "Hey", "Good morning", "Good evening")
_MOODS = ("happy", "tired", "sleepy", "busy", "calm", "bored", "hungry", "cheerful")
_ASKS = ("How are you?", "What are you doing?", "How was your day?", "Are you well?", "What is new?", "Can we talk?")
_THINGS = ("garden", "kitchen", "bike", "letter", "homework", "party", "painting", "song", "trip", "cake",
           "room", "plan")
_WHEN = ("today", "yesterday", "this morning", "last week")
_THANKS = ("Thank you", "Thanks a lot", "Many thanks", "I am grateful")
_SHIFT_WORDS = {1: "one", 2: "two"}


def make_reverse_list(world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """Reverse a short list of words or numbers."""
    items = _words(rng, 3, 6) if subtask == "words" else _numbers(rng, 3, 6)
    return Example("reverse_list", subtask, "distractor", f"Reverse the list: {', '.join(items)}",
                   ", ".join(items[::-1]))


def make_sort_numbers(world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """Sort a few numbers ascending or descending."""
    values = [int(v) for v in _numbers(rng, 3, 6)]
    descending = subtask == "descending"
    order = "largest to smallest" if descending else "smallest to largest"
    prompt = f"Sort these numbers from {order}: {', '.join(map(str, values))}"
    return Example("sort_numbers", subtask, "distractor", prompt,
                   ", ".join(map(str, sorted(values, reverse=descending))))


def make_cipher(world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """Shift every letter of a few words forward by one or two places (z wraps to a)."""
    shift = 1 if subtask == "shift_one" else 2
    text = " ".join(_words(rng, 2, 4))
    return Example("cipher", subtask, "distractor",
                   f"Shift each letter forward by {_SHIFT_WORDS[shift]}: {text}", shift_letters(text, shift))


def make_small_talk(world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """A friendly greeting or thanks and a short polite reply."""
    name = pick(rng, NAMES)
    if subtask == "greeting":
        mood = pick(rng, _MOODS)
        prompt = f"{pick(rng, _GREETINGS)}! I am {name}. I feel {mood} today. {pick(rng, _ASKS)}"
        answer = f"Hello, {name}! I am fine, thank you. It is nice to hear that you feel {mood}."
    else:
        thing = pick(rng, _THINGS)
        prompt = f"{pick(rng, _THANKS)} for the help with my {thing} {pick(rng, _WHEN)}. I am {name}."
        answer = f"You are welcome, {name}! I am glad the {thing} went well."
    return Example("small_talk", subtask, "distractor", prompt, answer)


def make_count_words(world: World, subtask: str, rng: np.random.Generator, harmful: bool = False) -> Example:
    """Count the words of a short or a longer list."""
    words = _words(rng, 2, 5) if subtask == "short" else _words(rng, 6, 10)
    return Example("count_words", subtask, "distractor", f"How many words are in this list: {' '.join(words)}",
                   str(len(words)))


def shift_letters(text: str, shift: int) -> str:
    """Caesar shift of lowercase letters by ``shift``; other characters unchanged."""
    return "".join(chr((ord(c) - 97 + shift) % 26 + 97) if "a" <= c <= "z" else c for c in text)


def _words(rng: np.random.Generator, low: int, high: int) -> list[str]:
    return sample(rng, WORDS, int(rng.integers(low, high + 1)))


def _numbers(rng: np.random.Generator, low: int, high: int) -> list[str]:
    return [str(int(v)) for v in rng.choice(np.arange(1, 100), int(rng.integers(low, high + 1)), replace=False)]


DISTRACTORS: dict[str, tuple[tuple[str, ...], Maker]] = {
    "reverse_list": (("words", "numbers"), make_reverse_list),
    "sort_numbers": (("ascending", "descending"), make_sort_numbers),
    "cipher": (("shift_one", "shift_two"), make_cipher),
    "small_talk": (("greeting", "thanks"), make_small_talk),
    "count_words": (("short", "long"), make_count_words),
}
"""Distractor family -> (its subtasks, its maker)."""
