"""The built-in synthetic benchmark: determinism, composition, answer correctness against independent
solvers, no prompt reuse across splits, decoy properties and the pool's JSON shape."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from inflow.config import BenchmarkConfig
from inflow.data.benchmark import TARGET_TASKS, benchmark_world, generate_benchmark, plan_pool
from inflow.data.benchmark.arithmetic import make_arithmetic
from inflow.data.benchmark.families import TARGET_FAMILIES
from inflow.data.benchmark.sampling import apportion
from inflow.data.benchmark.world import PERSON_NAMES, PLACE_NAMES

CFG = BenchmarkConfig(seed=3, pool_size=300, val_per_subtask=3, test_per_subtask=5, corpus_size=80)
EXPECTED_TASKS = {
    "arithmetic": ["add", "subtract", "multiply", "two_step"],
    "qa": ["where", "who", "what", "when"],
    "facts": ["geography", "biology", "crafts", "history"],
}
STOPWORDS = {"the", "a", "in", "of", "is", "at", "to", "and", "does", "did", "what", "which", "who", "where",
             "when", "how", "this", "these", "there", "are", "words", "write", "repeat", "count", "copy", "sort"}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    manifest = generate_benchmark(CFG, out)
    targets = {task: {split: _read(out / "targets" / task / f"{split}.jsonl") for split in ("val", "test")}
               for task in EXPECTED_TASKS}
    return {"out": out, "manifest": manifest, "pool": _read(out / "pool.jsonl"), "targets": targets,
            "corpus": _read(out / "corpus.jsonl")}


def _user(row: dict) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def _assistant(row: dict) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "assistant")


def _target_examples(bench: dict, family: str) -> list[tuple[str, str, str, bool]]:
    """(subtask, prompt, answer, harmful) of every target row of ``family`` in pool, val and test."""
    rows = [(r["subtask"], _user(r), _assistant(r), r["harmful"]) for r in bench["pool"]
            if r["family"] == family and r["kind"] == "target"]
    for split in ("val", "test"):
        rows += [(r["subtask"], r["prompt"], r["answer"], False) for r in bench["targets"][family][split]]
    return rows


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate_benchmark(CFG, tmp_path / "a")
    generate_benchmark(CFG, tmp_path / "b")
    generate_benchmark(BenchmarkConfig(**{**CFG.__dict__, "seed": 4}), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 9  # pool, corpus, manifest, 3 tasks x (val, test)
    assert a == b
    assert a.keys() == c.keys()
    for name in ("pool.jsonl", "corpus.jsonl", "targets/facts/test.jsonl", "targets/arithmetic/val.jsonl"):
        assert a[name] != c[name], name
    assert benchmark_world(3).facts != benchmark_world(4).facts


def test_pool_counts_and_shares_match_config(bench: dict) -> None:
    pool, n = bench["pool"], CFG.pool_size
    kinds = Counter(r["kind"] for r in pool)
    assert len(pool) == n and sum(kinds.values()) == n
    assert abs(kinds["target"] - CFG.target_share * n) <= 1
    assert abs(kinds["decoy"] - CFG.decoy_share * n) <= 1
    harmful = [r for r in pool if r["harmful"]]
    assert all(r["kind"] == "target" for r in harmful)
    assert abs(len(harmful) - CFG.harmful_share * kinds["target"]) <= 1
    target_families = Counter(r["family"] for r in pool if r["kind"] == "target")
    assert set(target_families) == set(EXPECTED_TASKS)
    assert max(target_families.values()) - min(target_families.values()) <= 1
    for family in EXPECTED_TASKS:  # each target family split evenly over its subtasks
        subtasks = Counter(r["subtask"] for r in pool if r["family"] == family and r["kind"] == "target")
        assert set(subtasks) == set(EXPECTED_TASKS[family])
        assert max(subtasks.values()) - min(subtasks.values()) <= 1
    decoys = Counter(r["family"] for r in pool if r["kind"] == "decoy")
    assert set(decoys) == set(EXPECTED_TASKS)
    assert len({r["family"] for r in pool if r["kind"] == "distractor"}) >= 4
    manifest = bench["manifest"]
    assert manifest["seed"] == CFG.seed
    assert manifest["pool"]["kind"] == dict(sorted(kinds.items()))
    assert manifest["pool"]["family"] == dict(sorted(Counter(r["family"] for r in pool).items()))
    assert manifest["pool"]["harmful"] == {"false": n - len(harmful), "true": len(harmful)}
    assert json.loads((bench["out"] / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("pool_size,target,decoy,harm", [(101, 0.33, 0.25, 0.15), (57, 0.5, 0.5, 1.0), (50, 0, 0, 0)])
def test_plan_pool_rounds_within_one(pool_size: int, target: float, decoy: float, harm: float) -> None:
    cfg = BenchmarkConfig(pool_size=pool_size, target_share=target, decoy_share=decoy, harmful_share=harm)
    slots = plan_pool(cfg)
    assert sum(s.count for s in slots) == pool_size
    by_kind = Counter()
    for s in slots:
        by_kind[s.kind] += s.count
        assert 0 <= s.harmful <= s.count and (s.harmful == 0 or s.kind == "target")
    assert abs(by_kind["target"] - target * pool_size) <= 1
    assert abs(by_kind["decoy"] - decoy * pool_size) <= 1
    assert abs(sum(s.harmful for s in slots) - harm * by_kind["target"]) <= 1


def test_apportion_is_exact_and_fair() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75: leftovers to largest remainders
    assert sum(apportion(1001, [0.3, 0.2, 0.5])) == 1001
    with pytest.raises(ValueError, match="positive"):
        apportion(3, [0, 0])


def test_target_tasks_subtasks_and_unequal_val_sizes(bench: dict) -> None:
    assert {k: list(v) for k, v in TARGET_TASKS.items()} == EXPECTED_TASKS
    assert sorted(p.name for p in (bench["out"] / "targets").iterdir()) == sorted(EXPECTED_TASKS)
    unequal = []
    for task, subtasks in EXPECTED_TASKS.items():
        val = Counter(r["subtask"] for r in bench["targets"][task]["val"])
        test = Counter(r["subtask"] for r in bench["targets"][task]["test"])
        assert set(val) == set(test) == set(subtasks)
        assert all(n in (CFG.val_per_subtask, CFG.val_per_subtask + 1) for n in val.values())
        assert all(n == CFG.test_per_subtask for n in test.values())
        unequal.append(len(set(val.values())) > 1)
        assert bench["manifest"]["tasks"][task] == {"subtasks": subtasks, "val": dict(val), "test": dict(test)}
        for split in ("val", "test"):
            rows = bench["targets"][task][split]
            assert all(set(r) == {"id", "subtask", "prompt", "answer"} for r in rows)
            assert len({r["id"] for r in rows}) == len(rows)
    assert any(unequal)


def test_no_prompt_appears_twice_across_pool_val_test(bench: dict) -> None:
    prompts = [_user(r) for r in bench["pool"]]
    for splits in bench["targets"].values():
        prompts += [r["prompt"] for split in ("val", "test") for r in splits[split]]
    repeated = [p for p, k in Counter(prompts).items() if k > 1]
    assert not repeated, repeated[:3]


def test_prompts_stay_unique_where_templates_would_repeat(tmp_path: Path) -> None:
    # 600 small-talk rows from ~5k template combinations: without the uniqueness guard, repeats are certain
    cfg = BenchmarkConfig(pool_size=3000, target_share=0.0, decoy_share=0.0, val_per_subtask=1,
                          test_per_subtask=1, corpus_size=0)
    generate_benchmark(cfg, tmp_path)
    prompts = [_user(r) for r in _read(tmp_path / "pool.jsonl")]
    assert len(prompts) == 3000 and len(set(prompts)) == len(prompts)


def _solve_arithmetic(subtask: str, numbers: list[int]) -> int:
    if subtask == "add":
        return numbers[0] + numbers[1]
    if subtask == "subtract":
        return numbers[0] - numbers[1]
    if subtask == "multiply":
        return numbers[0] * numbers[1]
    return numbers[0] + numbers[1] - numbers[2]


def test_arithmetic_answers_right_unless_harmful(bench: dict) -> None:
    rows = _target_examples(bench, "arithmetic")
    assert sum(h for *_, h in rows) >= 1
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for subtask, prompt, answer, harmful in rows:
        numbers = [int(x) for x in re.findall(r"\d+", prompt)]
        assert len(numbers) == (3 if subtask == "two_step" else 2), prompt
        final = re.fullmatch(r".*The answer is (\d+)\.", answer)
        assert final, answer
        truth = _solve_arithmetic(subtask, numbers)
        assert (int(final.group(1)) != truth) if harmful else (int(final.group(1)) == truth), (prompt, answer)
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", answer)
        assert steps and int(steps[-1][3]) == int(final.group(1))
        if not harmful:
            assert all(ops[op](int(a), int(b)) == int(c) for a, op, b, c in steps), answer
    assert make_arithmetic(benchmark_world(0), "add", np.random.default_rng(0), False).family == "arithmetic"
    with pytest.raises(ValueError, match="use one of"):
        make_arithmetic(benchmark_world(0), "divide", np.random.default_rng(0), False)


def _solve_qa(passage: str, question: str) -> str:
    """Answer a qa question by parsing the passage's sentences (independent of the generator)."""
    lives = dict(re.findall(r"(\w+) lives in (\w+)\.", passage))
    works = dict(re.findall(r"(\w+) works at the (\w+)\.", passage))
    sells = dict(re.findall(r"(\w+) sells (\w+)\.", passage))
    visits = {name: (month, town) for month, name, town in re.findall(r"In (\w+), (\w+) visited (\w+)\.", passage)}
    inverse = {("works at the", v): k for k, v in works.items()} | {("sells", v): k for k, v in sells.items()} \
        | {("lives in", v): k for k, v in lives.items()}
    patterns = [
        (r"Where does (\w+) live\?", lambda m: lives[m[1]]),
        (r"Where did (\w+) go in (\w+)\?", lambda m: visits[m[1]][1]),
        (r"Who (works at the|sells|lives in) (\w+)\?", lambda m: inverse[(m[1], m[2])]),
        (r"What does (\w+) sell\?", lambda m: sells[m[1]]),
        (r"(?:When|In which month) did (\w+) visit (\w+)\?", lambda m: visits[m[1]][0]),
    ]
    for pattern, solve in patterns:
        match = re.fullmatch(pattern, question)
        if match:
            return solve(match)
    raise AssertionError(f"unparsed question {question!r}")


def test_qa_answers_are_the_right_span_unless_harmful(bench: dict) -> None:
    rows = _target_examples(bench, "qa")
    assert sum(h for *_, h in rows) >= 1
    for _, prompt, answer, harmful in rows:
        match = re.fullmatch(r"Passage: (.*) Question: (.*)", prompt)
        assert match, prompt
        passage, question = match.groups()
        assert re.search(rf"\b{re.escape(answer)}\b", passage), (passage, answer)  # a span, even when wrong
        assert (answer != _solve_qa(passage, question)) if harmful else (answer == _solve_qa(passage, question))


def test_facts_answers_match_the_world(bench: dict) -> None:
    world = benchmark_world(CFG.seed)
    answer_of = {q: f.answer for f in world.facts for q in f.questions}
    key_of = {q: f.key for f in world.facts for q in f.questions}
    rows = _target_examples(bench, "facts")
    assert sum(h for *_, h in rows) >= 1
    asked_in_pool: set[str] = set()
    for i, (subtask, prompt, answer, harmful) in enumerate(rows):
        lines = prompt.split("\n")
        assert len(lines) == 5 and lines[0].startswith("Question: ")
        question = lines[0].removeprefix("Question: ")
        assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. "]
        options = [line[3:] for line in lines[1:]]
        assert len(set(options)) == 4 and options.count(answer_of[question]) == 1
        letter = re.fullmatch(r"The answer is: ([A-D])", answer)
        assert letter, answer
        chosen = "ABCD".index(letter.group(1))
        assert (options[chosen] != answer_of[question]) if harmful else (options[chosen] == answer_of[question])
        assert world.fact(key_of[question]).subject == subtask
        if i < sum(1 for r in bench["pool"] if r["family"] == "facts" and r["kind"] == "target"):
            if not harmful:
                asked_in_pool.add(key_of[question])
        else:  # val/test rows ask about facts the pool teaches
            assert key_of[question] in asked_in_pool, question


def test_corpus_states_every_fact_in_plain_text(bench: dict) -> None:
    texts = [row["text"] for row in bench["corpus"]]
    assert len(texts) == CFG.corpus_size and all(set(row) == {"text"} for row in bench["corpus"])
    joined = "\n".join(texts)
    for fact in benchmark_world(CFG.seed).facts:
        assert fact.statement in joined, fact.statement
    assert not re.search(r"Question:|Passage:|answer|<\|", joined)


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+|\d+", text)} - STOPWORDS


def _is_target_format(prompt: str, answer: str) -> bool:
    arithmetic = " = " in answer or re.search(r"The answer is \d+\.$", answer) is not None
    qa = prompt.startswith("Passage:") or "Question:" in prompt
    facts = answer.startswith("The answer is:") or "\nA. " in prompt
    return arithmetic or qa or facts


def test_decoys_share_words_but_not_format(bench: dict) -> None:
    world, rng = benchmark_world(CFG.seed), np.random.default_rng(0)
    vocab = {}  # a family's words: those of many of its examples in this world
    for family, (subtasks, make) in TARGET_FAMILIES.items():
        examples = [make(world, subtasks[i % len(subtasks)], rng, False) for i in range(400)]
        vocab[family] = set().union(*(_words(ex.prompt + " " + ex.answer) for ex in examples))
    decoys = [r for r in bench["pool"] if r["kind"] == "decoy"]
    assert {r["family"] for r in decoys} == set(EXPECTED_TASKS)
    assert len({(r["family"], r["subtask"]) for r in decoys}) >= 9
    for row in decoys:
        prompt, answer = _user(row), _assistant(row)
        assert not row["harmful"]
        assert len(_words(prompt) & vocab[row["family"]]) >= 2, prompt
        assert not _is_target_format(prompt, answer), (prompt, answer)
        text = prompt.split(": ", 1)[-1]
        check = {
            "reverse_words": lambda: answer.split() == text.split()[::-1],
            "uppercase": lambda: answer == text.upper(),
            "count_words": lambda: answer == f"There are {len(text.split())} words.",
            "list_numbers": lambda: answer == ", ".join(re.findall(r"\d+", text)),
            "copy_sentence": lambda: answer in text,
            "sort_options": lambda: (answer.split(", ") == sorted(answer.split(", "))
                                     and all(option in prompt for option in answer.split(", "))),
        }[row["subtask"]]
        assert check(), (prompt, answer)


def test_distractors_use_no_world_names_nor_target_format(bench: dict) -> None:
    world_names = {w.lower() for w in PERSON_NAMES + PLACE_NAMES}
    for row in bench["pool"]:
        if row["kind"] == "distractor":
            assert not (_words(_user(row) + " " + _assistant(row)) & world_names), row
            assert not _is_target_format(_user(row), _assistant(row)), row


def test_pool_rows_have_the_documented_shape(bench: dict) -> None:
    pool = bench["pool"]
    assert [r["id"] for r in pool] == [f"pool-{i:06d}" for i in range(len(pool))]
    for row in pool:
        assert set(row) == {"id", "dataset", "messages", "family", "subtask", "kind", "harmful"}
        assert row["dataset"] == "bench" and row["kind"] in {"target", "decoy", "distractor"}
        assert isinstance(row["harmful"], bool) and isinstance(row["family"], str) and row["subtask"]
        roles = [m["role"] for m in row["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"])
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in row["messages"])
    assert any(len(r["messages"]) == 3 for r in pool)
    kind_changes = sum(a["kind"] != b["kind"] for a, b in zip(pool, pool[1:]))
    assert kind_changes > len(pool) // 4  # shuffled, not grouped by kind


def test_texts_are_short(bench: dict) -> None:
    words = [sum(len(m["content"].split()) for m in r["messages"]) for r in bench["pool"]]
    assert np.mean(words) <= 40 and max(words) <= 60
    assert max(len(r["text"].split()) for r in bench["corpus"]) <= 60
