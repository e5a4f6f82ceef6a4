"""Target tasks: our JSONL form and the LESS evaluation layouts (MMLU, BBH, TyDiQA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from inflow.data.pool import stable_hash
from inflow.data.render import encode_prompt_answer
from inflow.data.targets import (TARGET_SCHEMA, load_bbh, load_mmlu, load_target_split, load_target_task,
                                 load_target_tasks, load_tydiqa)
from inflow.errors import InputError
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
    "duplicate content": (GOOD, "same content as line 1"),
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
