"""Compose and write the built-in benchmark: pool, target tasks, pretraining corpus and manifest.

Layout of ``out_dir`` (the manifest is written last, so its existence means the benchmark is complete)::

    pool.jsonl                   training candidates, Tulu v2 ``messages`` shape + ground-truth metadata
    targets/<task>/val.jsonl     few-shot rows per subtask, used for selection
    targets/<task>/test.jsonl    held-out rows per subtask, used only for evaluation
    corpus.jsonl                 {"text": ...} plain sentences about the world, for pretraining
    manifest.json                counts, seed, config, task/subtask names

Pool composition: ``target_share`` of the rows from the target families (split evenly over families,
then over each family's subtasks), ``decoy_share`` lexical decoys (evenly over the imitated families and
decoy types), the rest distractors; ``harmful_share`` of the target rows get a wrong answer. All splits
use largest-remainder rounding, so counts sum exactly. No user prompt appears twice across pool, val and
test. A target row's ``prompt`` is the user turn's content and its ``answer`` the assistant turn's, in
the same format as the pool.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inflow.config import BenchmarkConfig
from inflow.data.benchmark.corpus import generate_corpus
from inflow.data.benchmark.example import Example, Maker
from inflow.data.benchmark.families import (
    DECOY_FAMILIES, DISTRACTOR_FAMILIES, TARGET_FAMILIES, TARGET_TASKS, Registry,
)
from inflow.data.benchmark.sampling import apportion, pick
from inflow.data.benchmark.world import World, build_world
from inflow.errors import ConfigError

DATASET = "bench"
SYSTEM_SHARE = 0.1  # share of pool rows with a system message (any kind, so it is no signal)
SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly.", "You are a careful assistant.")
VAL_EXTRA: dict[str, str] = {"arithmetic": "two_step", "facts": "history"}
"""Subtasks given one more val row than ``val_per_subtask``, so subtask counts are unequal (as in real data)."""
MAX_TRIES = 2000  # draws per row before giving up on finding an unused prompt


@dataclass(frozen=True)
class Slot:
    """A block of pool rows to generate: ``count`` rows of one family/subtask, ``harmful`` of them wrong."""

    kind: str
    family: str
    subtask: str
    count: int
    harmful: int = 0


PARTS = frozenset({"pool", "targets", "corpus"})


def generate_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, parts: Collection[str] = PARTS) -> dict:
    """Generate the seeded benchmark into ``out_dir`` and return its manifest (also ``manifest.json``).

    Same ``cfg`` -> byte-identical files; the seed drives the world, the pool, the target splits and the
    corpus through independent ``SeedSequence`` children. Only the files of ``parts`` are written (a user who
    brings their own pool and targets gets no built-in ones beside them); the manifest describes them all.
    """
    unknown = set(parts) - PARTS
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)}: choose from {sorted(PARTS)}")
    world_ss, pool_ss, order_ss, val_ss, test_ss, corpus_ss = _streams(cfg.seed)
    world = build_world(np.random.default_rng(world_ss))
    seen: set[str] = set()
    pool_rng = np.random.default_rng(pool_ss)
    examples = [ex for slot in plan_pool(cfg) for ex in _fill_slot(slot, world, pool_rng, seen)]
    pool_rows = _pool_rows(examples, np.random.default_rng(order_ss))
    asked_world = _covered_world(world, examples)
    splits = {
        "val": _target_rows(cfg, "val", asked_world, np.random.default_rng(val_ss), seen),
        "test": _target_rows(cfg, "test", asked_world, np.random.default_rng(test_ss), seen),
    }
    corpus = generate_corpus(world, cfg.corpus_size, np.random.default_rng(corpus_ss))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "pool" in parts:
        _write_jsonl(out / "pool.jsonl", pool_rows)
    for split, rows_by_task in splits.items() if "targets" in parts else ():
        for task, rows in rows_by_task.items():
            (out / "targets" / task).mkdir(parents=True, exist_ok=True)
            _write_jsonl(out / "targets" / task / f"{split}.jsonl", rows)
    if "corpus" in parts:
        _write_jsonl(out / "corpus.jsonl", [{"text": text} for text in corpus])
    manifest = _manifest(cfg, world, pool_rows, splits, len(corpus))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def benchmark_world(seed: int) -> World:
    """The world :func:`generate_benchmark` builds for ``seed`` (to check answers against its facts)."""
    return build_world(np.random.default_rng(_streams(seed)[0]))


def _streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent seed streams: world, pool, pool order, val, test, corpus (in that order)."""
    return np.random.SeedSequence(seed).spawn(6)


def plan_pool(cfg: BenchmarkConfig) -> list[Slot]:
    """The pool's blocks (kind, family, subtask, rows, harmful rows), in generation order.

    Rows per kind: ``apportion(pool_size, [target_share, decoy_share, rest])``; within a kind evenly over
    families, then over subtasks; harmful rows: ``round(harmful_share * n_target)`` spread over the target
    blocks in proportion to their size.
    """
    rest = max(0.0, 1.0 - cfg.target_share - cfg.decoy_share)
    n_target, n_decoy, n_distractor = apportion(cfg.pool_size, [cfg.target_share, cfg.decoy_share, rest])
    targets = _even_slots("target", TARGET_FAMILIES, n_target)
    n_harmful = int(np.floor(cfg.harmful_share * n_target + 0.5))
    sizes = [slot.count for slot in targets]
    harmful = apportion(n_harmful, sizes) if n_target else [0] * len(targets)
    targets = [dataclasses.replace(slot, harmful=h) for slot, h in zip(targets, harmful)]
    return targets + _even_slots("decoy", DECOY_FAMILIES, n_decoy) + _even_slots("distractor", DISTRACTOR_FAMILIES,
                                                                                    n_distractor)


def _even_slots(kind: str, registry: Registry, total: int) -> list[Slot]:
    slots: list[Slot] = []
    for (family, (subtasks, _)), n_family in zip(registry.items(), apportion(total, [1.0] * len(registry))):
        for subtask, n in zip(subtasks, apportion(n_family, [1.0] * len(subtasks))):
            slots.append(Slot(kind, family, subtask, n))
    return slots


def _maker(slot: Slot) -> Maker:
    registry = {"target": TARGET_FAMILIES, "decoy": DECOY_FAMILIES, "distractor": DISTRACTOR_FAMILIES}[slot.kind]
    return registry[slot.family][1]


def _fill_slot(slot: Slot, world: World, rng: np.random.Generator, seen: set[str]) -> list[Example]:
    maker = _maker(slot)
    return [_draw_unique(maker, world, slot.family, slot.subtask, rng, i < slot.harmful, seen)
            for i in range(slot.count)]


def _draw_unique(maker: Maker, world: World, family: str, subtask: str, rng: np.random.Generator,
                 harmful: bool, seen: set[str]) -> Example:
    """An example whose prompt is not in ``seen`` (then added to it)."""
    for _ in range(MAX_TRIES):
        example = maker(world, subtask, rng, harmful)
        if example.prompt not in seen:
            seen.add(example.prompt)
            return example
    raise ConfigError(
        f"benchmark: no unused prompt for {family}/{subtask} after {MAX_TRIES} draws; the synthetic world is "
        "too small for this many rows: lower benchmark.pool_size, val_per_subtask or test_per_subtask")


def _pool_rows(examples: list[Example], rng: np.random.Generator) -> list[dict]:
    """Shuffle, number (``pool-000123``) and shape the pool rows; some get a system message."""
    width = max(6, len(str(max(len(examples) - 1, 0))))
    rows = []
    for i, position in enumerate(rng.permutation(len(examples))):
        ex = examples[int(position)]
        messages = [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
        if rng.random() < SYSTEM_SHARE:
            messages.insert(0, {"role": "system", "content": pick(rng, SYSTEM_PROMPTS)})
        rows.append({"id": f"pool-{i:0{width}d}", "dataset": DATASET, "messages": messages, "family": ex.family,
                     "subtask": ex.subtask, "kind": ex.kind, "harmful": ex.harmful})
    return rows


def _covered_world(world: World, examples: Iterable[Example]) -> World:
    """``world`` restricted to the facts the pool asks with a correct answer (all facts of a subject the
    pool never asks), so test questions are about facts that training on facts rows can teach."""
    asked = {ex.fact for ex in examples if ex.family == "facts" and ex.kind == "target" and not ex.harmful}
    kept = [f for f in world.facts if f.key in asked or not any(g.key in asked for g in world.facts_of(f.subject))]
    return dataclasses.replace(world, facts=tuple(kept))


def split_sizes(cfg: BenchmarkConfig, split: str) -> dict[str, dict[str, int]]:
    """Rows per task and subtask in ``split`` (``val``: ``val_per_subtask``, +1 for :data:`VAL_EXTRA`)."""
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; use 'val' or 'test'")
    if split == "test":
        return {task: {s: cfg.test_per_subtask for s in subtasks} for task, subtasks in TARGET_TASKS.items()}
    return {task: {s: cfg.val_per_subtask + int(VAL_EXTRA.get(task) == s) for s in subtasks}
            for task, subtasks in TARGET_TASKS.items()}


def _target_rows(cfg: BenchmarkConfig, split: str, world: World, rng: np.random.Generator,
                 seen: set[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for task, sizes in split_sizes(cfg, split).items():
        maker = TARGET_FAMILIES[task][1]
        examples = [_draw_unique(maker, world, task, subtask, rng, False, seen)
                    for subtask, n in sizes.items() for _ in range(n)]
        rows[task] = [{"id": f"{task}-{split}-{i:04d}", "subtask": ex.subtask, "prompt": ex.prompt,
                       "answer": ex.answer} for i, ex in enumerate(examples)]
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _manifest(cfg: BenchmarkConfig, world: World, pool_rows: list[dict],
              splits: dict[str, dict[str, list[dict]]], n_corpus: int) -> dict:
    """Counts per family / kind / harmful, the seed and config, and the task/subtask names and sizes."""
    def counts(values: Iterable[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    tasks = {
        task: {"subtasks": list(subtasks),
               **{split: {s: Counter(row["subtask"] for row in splits[split][task])[s] for s in subtasks}
                  for split in ("val", "test")}}
        for task, subtasks in TARGET_TASKS.items()
    }
    return {
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "files": {"pool": "pool.jsonl", "targets": "targets", "corpus": "corpus.jsonl"},
        "pool": {
            "rows": len(pool_rows),
            "kind": counts(row["kind"] for row in pool_rows),
            "family": counts(row["family"] for row in pool_rows),
            "family_kind": counts(f"{row['family']}/{row['kind']}" for row in pool_rows),
            "harmful": counts(str(row["harmful"]).lower() for row in pool_rows),
        },
        "tasks": tasks,
        "corpus": {"docs": n_corpus},
        "world": {"facts": len(world.facts)},
    }
