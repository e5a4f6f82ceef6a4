"""Target tasks: our JSONL form, the LESS evaluation layouts (MMLU, BBH, TyDiQA), ids, load_targets and
validate_targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from inflow.data.pool import stable_hash
from inflow.data.render import encode_prompt_answer
from inflow.config import DataConfig, params_from_dict
from inflow.data.targets import (TARGET_SCHEMA, TargetsError, load_bbh, load_mmlu, load_target_split,
                                 load_target_task, load_target_tasks, load_targets, load_tydiqa, validate_targets)
from inflow.errors import ConfigError, InputError
from inflow.models.tokenizer import train_tokenizer

LESS = Path(__file__).resolve().parents[1] / "fixtures" / "less_layouts"


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    texts = ["The following are multiple choice questions (with answers) about abstract algebra.",
             "Q: not True is\nA: Let's think step by step. So the answer is False.", "Passage: Question: Answer:"]
    return train_tokenizer(texts * 20, vocab_size=300)


def write_lines(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "a1", "subtask": "arith", "prompt": "2+2?", "answer": "4"},
    {"subtask": "arith", "prompt": "3+3?", "answer": "6"},
    {"subtask": "arith", "messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "1+1?"},
                                      {"role": "assistant", "content": "The answer is:"}], "answer": " 2"},
    {"subtask": "qa", "prompt": "Capital of France?", "answer": "Paris", "source": "ignored"},
]


def test_split_with_unequal_subtasks(tmp_path: Path) -> None:
    df = load_target_split(write_lines(tmp_path / "val.jsonl", ROWS))
    assert df.schema == TARGET_SCHEMA
    assert df["subtask"].to_list() == ["arith", "arith", "arith", "qa"]
    assert df["example_id"][0] == "a1"
    expected_hash = stable_hash({"subtask": "arith", "prompt_messages": [{"role": "user", "content": "3+3?"}],
                                 "answer": "6"})
    assert df["example_id"][1] == expected_hash
    assert df["prompt_messages"][1].to_list() == [{"role": "user", "content": "3+3?"}]
    assert df["prompt_messages"][2].to_list()[-1] == {"role": "assistant", "content": "The answer is:"}
    assert df["answer"].to_list() == ["4", "6", " 2", "Paris"]


GOOD = {"subtask": "s", "prompt": "q", "answer": "a"}
BAD_ROWS = {
    "invalid JSON": ("{", "invalid JSON"),
    "missing subtask": ({"prompt": "q", "answer": "a"}, "missing or empty 'subtask'"),
    "both prompt and messages": ({"subtask": "s", "prompt": "q", "messages": [{"role": "user", "content": "q"}],
                                  "answer": "a"}, "(has both)"),
    "neither prompt nor messages": ({"subtask": "s", "answer": "a"}, "(has neither)"),
    "empty prompt": ({"subtask": "s", "prompt": " ", "answer": "a"}, "'prompt' must be a non-empty string"),
    "bad message role": ({"subtask": "s", "messages": [{"role": "robot", "content": "q"}], "answer": "a"},
                         "role 'robot'"),
    "empty answer": ({"subtask": "s", "prompt": "q", "answer": ""}, "missing or empty 'answer'"),
    "numeric answer": ({"subtask": "s", "prompt": "q", "answer": 4}, "missing or empty 'answer'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_target_row_names_file_and_line(tmp_path: Path, case: str) -> None:
    bad, reason = BAD_ROWS[case]
    path = write_lines(tmp_path / "val.jsonl", [GOOD, bad])
    with pytest.raises(InputError) as info:
        load_target_split(path)
    assert f"{path}:2: " in str(info.value) and reason in str(info.value)


def test_task_folder_with_and_without_test_split(tmp_path: Path) -> None:
    write_lines(tmp_path / "gsm" / "val.jsonl", ROWS[:2])
    write_lines(tmp_path / "gsm" / "test.jsonl", [{"subtask": "arith", "prompt": "5+5?", "answer": "10"}])
    write_lines(tmp_path / "qa" / "val.jsonl", ROWS[3:])
    (tmp_path / "notes").mkdir()
    gsm = load_target_task(tmp_path / "gsm")
    assert gsm.name == "gsm" and gsm.val.height == 2 and gsm.test.height == 1 and gsm.subtasks == ["arith"]
    qa = load_target_task(tmp_path / "qa", name="capitals")
    assert qa.name == "capitals" and qa.test.height == 0 and qa.test.schema == TARGET_SCHEMA
    assert [t.name for t in load_target_tasks(tmp_path)] == ["gsm", "qa"]


def test_missing_val_and_empty_root_are_errors(tmp_path: Path) -> None:
    (tmp_path / "task").mkdir()
    with pytest.raises(InputError, match="val.jsonl: no such file"):
        load_target_task(tmp_path / "task")
    with pytest.raises(InputError, match="no sub-folder with a val.jsonl"):
        load_target_tasks(tmp_path)


def test_mmlu_layout(tok: PreTrainedTokenizerFast) -> None:
    task = load_mmlu(LESS / "mmlu")
    assert task.name == "mmlu" and task.subtasks == ["abstract_algebra", "college_biology"]
    assert task.val["subtask"].value_counts().sort("subtask")["count"].to_list() == [3, 1]
    assert task.test.height == 0
    row = task.val.row(0, named=True)
    assert row["example_id"] == "abstract_algebra_dev_0" and row["answer"] == " B"
    prompt = ("The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
              "Find the order of the group Z_4.\nA. 2\nB. 4\nC. 1, then 4\nD. 8\nAnswer:")
    assert row["prompt_messages"] == [{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": "The answer is:"}]
    assert task.val["prompt_messages"][1].to_list()[0]["content"].split("\n\n")[1].startswith(
        "Which statement is true?\nPick one.\nA. All groups")
    # Token for token what LESS feeds its model: query + completion.
    encoded = encode_prompt_answer(row["prompt_messages"], row["answer"], tok, 1000)
    assert encoded is not None
    assert tok.decode(encoded.input_ids[1:]) == "<|user|>\n" + prompt + "\n<|assistant|>\nThe answer is: B"
    assert tok.decode([t for t in encoded.labels if t != -100]) == " B"


def test_mmlu_bad_answer_reports_the_record_line(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "law_dev.csv").write_text('"two\nlines",a,b,c,d,A\nq,a,b,c,d,E\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"law_dev.csv:3: answer 'E' is not one of A, B, C, D"):
        load_mmlu(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no <subject>_dev.csv"):
        load_mmlu(tmp_path / "empty")


def test_bbh_layout(tok: PreTrainedTokenizerFast) -> None:
    task = load_bbh(LESS / "bbh" / "bbh-three-shot.json")
    assert task.subtasks == ["boolean_expressions", "word_sorting"] and task.val.height == 6
    row = task.val.row(0, named=True)
    assert row["example_id"] == "boolean_expressions-0"
    user = ("Evaluate the result of a random Boolean expression.\n\n"
            "Q: True and False is\nA: Let's think step by step.\nTrue and False = False. So the answer is False.\n\n"
            "Q: not not True is\nA: Let's think step by step.\nnot not True = True. So the answer is True.\n\n"
            "Q: not True is")
    assert row["prompt_messages"] == [{"role": "user", "content": user}, {"role": "assistant", "content": "A:"}]
    assert row["answer"] == " Let's think step by step.\nnot True = False. So the answer is False."
    last = task.val.row(5, named=True)
    assert last["prompt_messages"][0]["content"].endswith("Q: Sort: b a c\nA: a b c\n\nQ: Sort: dog cat")
    assert last["answer"] == " cat dog"
    encoded = encode_prompt_answer(row["prompt_messages"], row["answer"], tok, 1000)
    assert encoded is not None
    assert tok.decode(encoded.input_ids[1:]) == "<|user|>\n" + user + "\n<|assistant|>\nA:" + row["answer"]
    assert load_bbh(LESS / "bbh").val.equals(task.val)


def test_bbh_example_without_answer_marker(tmp_path: Path) -> None:
    path = tmp_path / "bbh.json"
    path.write_text(json.dumps({"t": "Prompt.\n\nQ: a\nA: b\n\nQ: c\nA: d\n\nQ: e, no answer"}))
    with pytest.raises(InputError, match=r"bbh.json: task 't': example 'Q: e, no answer' has no"):
        load_bbh(path)
    path.write_text("{\n  1,\n}")
    with pytest.raises(InputError, match=r"bbh.json:2: invalid JSON"):
        load_bbh(path)


def test_tydiqa_layout(tok: PreTrainedTokenizerFast) -> None:
    task = load_tydiqa(LESS / "tydiqa")
    assert task.subtasks == ["english", "finnish"]
    assert task.val["subtask"].to_list() == ["english", "english", "finnish"]
    row = task.val.row(0, named=True)
    user = ("Answer the following question based on the information in the given passage.Passage: "
            "Mount Kilo is 1200 m tall.\nQuestion: How tall is Mount Kilo?\n")
    assert row["prompt_messages"] == [{"role": "user", "content": user},
                                      {"role": "assistant", "content": "Answer:"}]
    assert row["answer"] == " 1200 m" and row["example_id"] == "english-0"
    finnish = task.val.row(2, named=True)["prompt_messages"]
    assert finnish[0]["content"].startswith("Vastaa seuraavaan kysymykseen") and finnish[1]["content"] == "Vastaus:"
    encoded = encode_prompt_answer(row["prompt_messages"], row["answer"], tok, 1000)
    assert encoded is not None
    assert tok.decode(encoded.input_ids[1:]) == "<|user|>\n" + user + "<|assistant|>\nAnswer: 1200 m"


def test_tydiqa_chinese_templates_and_unknown_language(tmp_path: Path) -> None:
    zh = load_tydiqa(LESS / "tydiqa" / "tydiqa-one-shot.json", zh=True)
    content = zh.val["prompt_messages"][0].to_list()
    assert content[0]["content"].startswith("根据所给文章中的信息回答以下问题。文章: Mount Kilo")
    assert content[1]["content"] == "答案:"
    path = tmp_path / "tydiqa-one-shot.json"
    path.write_text(json.dumps({"klingon": [{"context": "c", "question": "q", "answers": [{"text": "a"}]}]}))
    with pytest.raises(InputError, match="unknown language 'klingon'"):
        load_tydiqa(path)
    path.write_text(json.dumps({"english": [{"context": "c", "question": "q", "answers": []}]}))
    with pytest.raises(InputError, match=r"english\[0\] needs"):
        load_tydiqa(path)


# --- ids: optional, derived from content, repeats allowed ---------------------------------------------------

REPEATED = [GOOD, {"subtask": "s", "prompt": "other", "answer": "b"}, GOOD, GOOD]


def test_repeated_rows_without_ids_load_with_unique_stable_ids(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "test.jsonl", REPEATED)
    ids = load_target_split(path)["example_id"].to_list()
    base = stable_hash({"subtask": "s", "prompt_messages": [{"role": "user", "content": "q"}], "answer": "a"})
    assert ids[0] == base and ids[2:] == [f"{base}-2", f"{base}-3"]
    assert len(set(ids)) == len(ids)
    assert load_target_split(path)["example_id"].to_list() == ids  # same file, same ids
    # an unrelated row added in front keeps every other id (a store built on the split only grows)
    moved = write_lines(tmp_path / "moved.jsonl", [{"subtask": "s", "prompt": "new", "answer": "n"}, *REPEATED])
    assert load_target_split(moved)["example_id"].to_list()[1:] == ids


def test_given_ids_must_be_unique(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "val.jsonl", [{**GOOD, "id": "x"}, REPEATED[1], {**GOOD, "id": "x"}])
    with pytest.raises(InputError) as info:
        load_target_split(path)
    assert f"{path}:3: duplicate id 'x' (also on line 1)" in str(info.value)
    base = stable_hash({"subtask": "s", "prompt_messages": [{"role": "user", "content": "q"}], "answer": "a"})
    path = write_lines(tmp_path / "clash.jsonl", [{**REPEATED[1], "id": f"{base}-2"}, GOOD, GOOD])
    with pytest.raises(InputError, match=f"clash.jsonl:3: id '{base}-2' is given on line 1 and also derived"):
        load_target_split(path)


# --- data.targets_format: load_targets dispatches ----------------------------------------------------------

def _jsonl_targets(root: Path) -> Path:
    write_lines(root / "gsm" / "val.jsonl", ROWS[:2])
    write_lines(root / "gsm" / "test.jsonl", [{"subtask": "arith", "prompt": "5+5?", "answer": "10"}] * 2)
    return root


@pytest.mark.parametrize(("fmt", "path", "name", "n_val"), [
    ("jsonl", None, "gsm", 2), ("mmlu", LESS / "mmlu", "mmlu", 4), ("bbh", LESS / "bbh", "bbh", 6),
    ("tydiqa", LESS / "tydiqa" / "tydiqa-one-shot.json", "tydiqa", 3),
])
def test_load_targets_follows_the_format(tmp_path: Path, fmt: str, path: Path | None, name: str, n_val: int) -> None:
    targets = path or _jsonl_targets(tmp_path)
    tasks = load_targets(DataConfig(targets=str(targets), targets_format=fmt))  # type: ignore[arg-type]
    assert [t.name for t in tasks] == [name] and tasks[0].val.height == n_val
    assert tasks[0].test.height == (2 if fmt == "jsonl" else 0)


def test_unknown_targets_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.targets_format: must be one of"):
        params_from_dict({"data": {"targets_format": "csv"}})


def test_less_layouts_take_a_test_split_beside(tmp_path: Path) -> None:
    shutil.copytree(LESS, tmp_path / "less")
    test_rows = [{"subtask": "word_sorting", "prompt": "Sort: b a", "answer": " a b"}] * 2
    write_lines(tmp_path / "less" / "bbh" / "test.jsonl", test_rows)
    bbh = load_targets(DataConfig(targets=str(tmp_path / "less" / "bbh" / "bbh-three-shot.json"),
                                  targets_format="bbh"))[0]
    assert bbh.test.height == 2 and bbh.test["example_id"].n_unique() == 2
    test_dir = tmp_path / "less" / "mmlu" / "test"
    test_dir.mkdir()
    (test_dir / "abstract_algebra_test.csv").write_text("What is 1+1?,1,2,3,4,B\n", encoding="utf-8")
    mmlu = load_mmlu(tmp_path / "less" / "mmlu")
    assert mmlu.test["example_id"].to_list() == ["abstract_algebra_test_0"]
    assert mmlu.test["prompt_messages"][0].to_list()[1] == {"role": "assistant", "content": "The answer is:"}
    write_lines(tmp_path / "less" / "mmlu" / "test.jsonl", [GOOD])
    with pytest.raises(InputError, match="two test splits"):
        load_mmlu(tmp_path / "less" / "mmlu")


# --- validate_targets: every problem in one error -----------------------------------------------------------

def test_validate_targets_lists_every_problem(tmp_path: Path) -> None:
    root = _jsonl_targets(tmp_path / "targets")
    write_lines(root / "no_test" / "val.jsonl", [GOOD])
    write_lines(root / "bad_line" / "val.jsonl", [GOOD, {"subtask": "s", "answer": "a"}])
    write_lines(root / "bad_line" / "test.jsonl", [GOOD])
    write_lines(root / "untested" / "val.jsonl", [GOOD, {"subtask": "t", "prompt": "q", "answer": "a"}])
    write_lines(root / "untested" / "test.jsonl", [GOOD])
    write_lines(root / "stray" / "test.jsonl", [GOOD])
    with pytest.raises(TargetsError) as info:
        validate_targets(DataConfig(targets=str(root)))
    problems = info.value.problems
    assert len(problems) == 4 and "4 problem(s)" in str(info.value)
    assert f"{root / 'bad_line' / 'val.jsonl'}:2: needs exactly one of 'prompt' and 'messages'" in problems[0]
    assert f"target task no_test: no test split at {root / 'no_test' / 'test.jsonl'}" in problems[1]
    assert "cannot be evaluated" in problems[1]
    assert "target task untested: subtask(s) t have validation rows but no test rows" in problems[2]
    assert f"{root / 'stray'}: has test.jsonl but no val.jsonl" in problems[3]


def test_validate_targets_passes_and_reports_less_without_test(tmp_path: Path) -> None:
    assert validate_targets(DataConfig(targets=str(_jsonl_targets(tmp_path)))) == ["gsm"]
    with pytest.raises(TargetsError, match=r"target task tydiqa: no test split at .*test\.jsonl.*cannot be evaluated"):
        validate_targets(DataConfig(targets=str(LESS / "tydiqa"), targets_format="tydiqa"))
    with pytest.raises(TargetsError, match="no sub-folder with a val.jsonl"):
        validate_targets(DataConfig(targets=str(tmp_path / "gsm")))
