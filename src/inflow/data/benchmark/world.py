"""The synthetic world of the built-in benchmark: a closed lexicon and the facts drawn from it by the seed.

The lexicon (names, places, animals, crafts, items...) is fixed and small, so a tiny BPE vocabulary
(~1k tokens) covers it and a tiny model can learn it. The seed decides the *roles* and the *facts*: which
names are people and which are city founders, which city is the capital of which country, what each
animal eats, which tool each craft uses, and so on. Each :class:`Fact` carries its question phrasings
(for the ``facts`` task), its answer, the answer's category (for the wrong options) and a plain
statement (for the pretraining corpus), so the same fact is always asked and stated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inflow.data.benchmark.sampling import sample, shuffled

PERSON_NAMES: tuple[str, ...] = (
    "Nara", "Tovin", "Imra", "Pell", "Sori", "Daven", "Kesa", "Milo", "Runa", "Tarek", "Velia", "Oskar",
    "Lina", "Bram", "Edda", "Joren", "Mara", "Ulf", "Tessa", "Rurik", "Hana", "Gideon", "Ilse", "Corin",
)
PLACE_NAMES: tuple[str, ...] = (
    "Velmar", "Orsk", "Dalen", "Tosk", "Imbra", "Korvi", "Lunde", "Marsk", "Pellin", "Rhen", "Sarvo",
    "Tallis", "Ubra", "Vesk", "Wynn", "Yrsa", "Zoren", "Arlo", "Brisk", "Corra", "Dunmar", "Elso", "Fenna",
    "Garo", "Holm", "Istra", "Jorvik", "Kalla", "Lirra", "Morwen",
)
ANIMALS: tuple[str, ...] = (
    "dorn", "vimble", "skarl", "mott", "fennick", "brask", "lurra", "quell", "tosker", "warrow",
)
FOODS: tuple[str, ...] = (
    "berries", "fish", "grass", "seeds", "leaves", "insects", "roots", "nuts", "moss", "worms",
)
HABITATS: tuple[str, ...] = (
    "forest", "marsh", "desert", "hills", "meadow", "caves", "coast", "lake", "valley", "jungle",
)
CRAFTS: tuple[str, ...] = ("smith", "weaver", "potter", "carver", "tanner", "baker", "cooper", "mason")
TOOLS: tuple[str, ...] = ("hammer", "loom", "wheel", "knife", "needle", "chisel", "oven", "saw", "awl", "kiln")
MATERIALS: tuple[str, ...] = ("iron", "wool", "clay", "oak", "leather", "flour", "stone", "glass", "copper", "reed")
TITLES: tuple[str, ...] = ("King", "Queen")
ITEMS: tuple[str, ...] = (
    "lamps", "cups", "books", "apples", "coins", "shells", "ropes", "stones", "candles", "pots", "hats", "pears",
)
CONTAINERS: tuple[str, ...] = ("boxes", "bags", "crates", "baskets")
WORKPLACES: tuple[str, ...] = (
    "mill", "bakery", "market", "school", "harbor", "library", "farm", "forge", "inn", "temple",
)
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)

N_COUNTRIES = 6
N_PEOPLE = 16
N_ANIMALS = 8
N_FOUNDED = 8  # cities with a founder and a founding year (the history facts)
SUBJECTS: tuple[str, ...] = ("geography", "biology", "crafts", "history")


@dataclass(frozen=True)
class Fact:
    """One fact of the world, asked by the ``facts`` task and stated in the corpus.

    ``key`` is stable within a world (``"capital:Velmar"``); ``questions`` are its phrasings; ``options``
    is the category the answer belongs to (wrong options are drawn from it, never equal to ``answer``).
    """

    key: str
    subject: str
    questions: tuple[str, ...]
    answer: str
    options: tuple[str, ...]
    statement: str


@dataclass(frozen=True)
class World:
    """The roles and facts drawn from the lexicon by one seed (see the module docstring)."""

    people: tuple[str, ...]
    founders: tuple[str, ...]
    countries: tuple[str, ...]
    capitals: tuple[str, ...]  # capitals[i] is the capital of countries[i]
    towns: tuple[str, ...]  # towns[2*i], towns[2*i+1] lie in countries[i]
    rivers: tuple[str, ...]  # rivers[i] flows through countries[i]
    animals: tuple[str, ...]
    facts: tuple[Fact, ...]

    @property
    def cities(self) -> tuple[str, ...]:
        """Capitals and towns: the places people live in and visit."""
        return self.capitals + self.towns

    def facts_of(self, subject: str) -> tuple[Fact, ...]:
        """The facts of one subject (a ``facts`` subtask), in world order."""
        found = tuple(f for f in self.facts if f.subject == subject)
        if not found:
            raise ValueError(f"unknown facts subject {subject!r}; use one of {list(SUBJECTS)}")
        return found

    def fact(self, key: str) -> Fact:
        """The fact with ``key``."""
        for f in self.facts:
            if f.key == key:
                return f
        raise KeyError(f"no fact {key!r} in this world; keys look like 'capital:<country>'")


def build_world(rng: np.random.Generator) -> World:
    """Draw roles and facts from the closed lexicon with ``rng`` (same generator state -> same world)."""
    names = shuffled(rng, PERSON_NAMES)
    places = shuffled(rng, PLACE_NAMES)
    n = N_COUNTRIES
    countries, capitals = tuple(places[:n]), tuple(places[n:2 * n])
    towns, rivers = tuple(places[2 * n:4 * n]), tuple(places[4 * n:5 * n])
    founders = tuple(f"{TITLES[i % 2]} {name}" for i, name in enumerate(names[N_PEOPLE:N_PEOPLE + N_FOUNDED]))
    animals = tuple(sample(rng, ANIMALS, N_ANIMALS))
    facts = (
        _geography(countries, capitals, towns, rivers)
        + _biology(rng, animals)
        + _crafts(rng)
        + _history(rng, capitals + towns, founders)
    )
    return World(
        people=tuple(names[:N_PEOPLE]), founders=founders, countries=countries, capitals=capitals,
        towns=towns, rivers=rivers, animals=animals, facts=facts,
    )


def _geography(countries: tuple[str, ...], capitals: tuple[str, ...], towns: tuple[str, ...],
               rivers: tuple[str, ...]) -> tuple[Fact, ...]:
    cities = capitals + towns
    facts: list[Fact] = []
    for i, country in enumerate(countries):
        facts.append(Fact(
            f"capital:{country}", "geography",
            (f"What is the capital of {country}?", f"Which city is the capital of {country}?"),
            capitals[i], cities, f"The capital of {country} is {capitals[i]}."))
        facts.append(Fact(
            f"river:{country}", "geography",
            (f"Which river flows through {country}?", f"What river runs through {country}?"),
            rivers[i], rivers, f"The {rivers[i]} river flows through {country}."))
        town = towns[2 * i]
        facts.append(Fact(
            f"country:{town}", "geography",
            (f"In which country is {town}?", f"Which country is {town} in?"),
            country, countries, f"{town} is a town in {country}."))
    return tuple(facts)


def _biology(rng: np.random.Generator, animals: tuple[str, ...]) -> tuple[Fact, ...]:
    foods = sample(rng, FOODS, len(animals))
    habitats = sample(rng, HABITATS, len(animals))
    facts: list[Fact] = []
    for animal, food, habitat in zip(animals, foods, habitats):
        facts.append(Fact(
            f"food:{animal}", "biology",
            (f"What does the {animal} eat?", f"What food does the {animal} eat?"),
            food, FOODS, f"The {animal} eats {food}."))
        facts.append(Fact(
            f"habitat:{animal}", "biology",
            (f"Where does the {animal} live?", f"In which place does the {animal} live?"),
            habitat, HABITATS, f"The {animal} lives in the {habitat}."))
    return tuple(facts)


def _crafts(rng: np.random.Generator) -> tuple[Fact, ...]:
    tools = sample(rng, TOOLS, len(CRAFTS))
    materials = sample(rng, MATERIALS, len(CRAFTS))
    facts: list[Fact] = []
    for craft, tool, material in zip(CRAFTS, tools, materials):
        facts.append(Fact(
            f"tool:{craft}", "crafts",
            (f"Which tool does a {craft} use?", f"What tool does a {craft} use?"),
            tool, TOOLS, f"A {craft} uses a {tool}."))
        facts.append(Fact(
            f"material:{craft}", "crafts",
            (f"What material does a {craft} work with?", f"Which material does a {craft} work with?"),
            material, MATERIALS, f"A {craft} works with {material}."))
    return tuple(facts)


def _history(rng: np.random.Generator, cities: tuple[str, ...], founders: tuple[str, ...]) -> tuple[Fact, ...]:
    founded = sample(rng, cities, len(founders))
    years = tuple(str(y) for y in sorted(int(y) for y in rng.choice(np.arange(100, 1000, 10), len(founders),
                                                                        replace=False)))
    order = shuffled(rng, list(years))
    facts: list[Fact] = []
    for city, founder, year in zip(founded, founders, order):
        facts.append(Fact(
            f"founder:{city}", "history",
            (f"Who founded {city}?", f"Who was the founder of {city}?"),
            founder, founders, f"{city} was founded by {founder}."))
        facts.append(Fact(
            f"year:{city}", "history",
            (f"In which year was {city} founded?", f"When was {city} founded?"),
            year, years, f"{city} was founded in the year {year}."))
    return tuple(facts)
