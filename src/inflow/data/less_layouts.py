"""The LESS evaluation layouts as target tasks, formatted exactly as LESS formats its validation rows
(``less/data_selection/get_validation_dataset.py``), so validation gradients match LESS's token for token.

``data.targets_format`` picks one (``inflow.data.targets.load_targets``); ``data.targets`` points at:

- ``mmlu``: the MMLU folder holding ``dev/<subject>_dev.csv`` (no header: question, choices..., answer
  letter), one subtask per subject. Test split: MMLU's own ``test/<subject>_test.csv`` beside ``dev/``
  (formatted like the dev rows), or a ``test.jsonl`` in the folder.
- ``bbh``: ``bbh-three-shot.json`` (or its folder), ``{task: "<task prompt>\\n\\nQ: ...\\nA: ...\\n\\n..."}``,
  one subtask per BBH task. Test split: a ``test.jsonl`` beside the JSON file.
- ``tydiqa``: ``tydiqa-one-shot.json`` (or its folder), ``{language: [{"context", "question", "answers"}]}``,
  one subtask per language. Test split: a ``test.jsonl`` beside the JSON file.

A ``test.jsonl`` holds rows in our JSONL target form (``inflow.data.targets``): write its prompts the way
the validation rows read (same instruction, response prefix and answer style) with the same subtask
labels. LESS's files give no test split; without one the task can be selected for but not evaluated
(``validate_targets`` reports it before any stage runs).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from inflow.data.target_task import (TargetSource, TargetTask, load_target_split, prefix_message, target_frame,
                                     user_message)
from inflow.errors import InputError

MMLU_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TEST_JSONL = "test.jsonl"

# TyDiQA prompt templates per language (instruction, passage label, question label, answer label): the
# strings LESS and open-instruct use, so the validation prompts match theirs token for token.
TYDIQA_TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "english": ("Answer the following question based on the information in the given passage.", "Passage:",
                "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:", "প্রশ্ন:",
                "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.", "Kappale:", "Kysymys:",
                "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.", "Bagian:",
                   "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.", "Отрывок:", "Вопрос:",
                "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.", "Kifungu:", "Swali:",
                "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}
TYDIQA_TEMPLATE_ZH = ("根据所给文章中的信息回答以下问题。", "文章:", "问题:", "答案:")


def _less_frame(rows: list[dict[str, Any]], path: Path) -> pl.DataFrame:
    if not rows:
        raise InputError(path, None, "no examples found", "check that this is a LESS evaluation file or folder")
    return target_frame(rows)


def _test_beside(path: Path) -> tuple[Callable[[], pl.DataFrame] | None, Path, str]:
    """The optional ``test.jsonl`` beside a LESS file: (its reader or None, its path, how to add one)."""
    test = path.parent / TEST_JSONL
    hint = f"add {test}: held-out rows in the JSONL target form, with the validation rows' subtask labels"
    return (partial(load_target_split, test) if test.is_file() else None), test, hint


def _mmlu_subject(subject: str) -> str:
    # LESS prepends a space to every word, so its prompts read "about  college biology." (two spaces).
    return "".join(" " + word for word in subject.split("_"))


def _mmlu_rows(path: Path, subject: str, split: str) -> list[dict[str, Any]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        start = 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record:
                continue
            n_choices = len(record) - 2
            if n_choices < 2 or n_choices > len(MMLU_LETTERS):
                raise InputError(path, line, f"{len(record)} fields", "expected: question, choices..., answer letter")
            letters = MMLU_LETTERS[:n_choices]
            question, choices, answer = record[0], record[1:-1], record[-1].strip()
            if answer not in letters:
                raise InputError(path, line, f"answer {answer!r} is not one of {', '.join(letters)}",
                                 "the last field must be the letter of the correct choice")
            prompt = (f"The following are multiple choice questions (with answers) about {_mmlu_subject(subject)}.\n\n"
                      + question + "".join(f"\n{letter}. {choice}" for letter, choice in zip(letters, choices))
                      + "\nAnswer:")
            rows.append({"example_id": f"{subject}_{split}_{len(rows)}", "subtask": subject,
                         "prompt_messages": [user_message(prompt), prefix_message("The answer is:")],
                         "answer": " " + answer})
    return rows


def _mmlu_frame(files: list[Path], split: str, where: Path) -> pl.DataFrame:
    rows = []
    for file in files:
        subject_rows = _mmlu_rows(file, file.name[: -len(f"_{split}.csv")], split)
        if not subject_rows:
            raise InputError(file, None, "no rows", "remove the empty file or fill it")
        rows += subject_rows
    return _less_frame(rows, where)


def mmlu_source(directory: str | Path, name: str = "mmlu") -> TargetSource:
    """The MMLU folder as a target task (see :func:`load_mmlu`); test split: ``test/*_test.csv`` or ``test.jsonl``."""
    directory = Path(directory)
    nested = (directory / "dev").is_dir()
    files = sorted((directory / "dev" if nested else directory).glob("*_dev.csv"))
    if not files:
        raise InputError(directory, None, "no <subject>_dev.csv files",
                         "point at the MMLU folder holding dev/<subject>_dev.csv (LESS: data/eval/mmlu)")
    test_dir, test_jsonl = directory / "test", directory / TEST_JSONL
    test_files = sorted(test_dir.glob("*_test.csv")) if nested else []
    if test_files and test_jsonl.is_file():
        raise InputError(directory, None, f"two test splits: {test_dir}/*_test.csv and {test_jsonl}",
                         "keep one of them")
    read_test: Callable[[], pl.DataFrame] | None = None
    if test_files:
        read_test = partial(_mmlu_frame, test_files, "test", test_dir)
    elif test_jsonl.is_file():
        read_test = partial(load_target_split, test_jsonl)
    hint = (f"put MMLU's test/<subject>_test.csv files in {test_dir}, or held-out rows in the JSONL target form "
            f"in {test_jsonl}")
    return TargetSource(name, partial(_mmlu_frame, files, "dev", directory), read_test,
                        test_dir if nested and not test_jsonl.is_file() else test_jsonl, hint)


def load_mmlu(directory: str | Path, name: str = "mmlu") -> TargetTask:
    """MMLU dev rows (LESS's MMLU validation set), one subtask per subject, and the test split if given.

    Reads ``directory/dev/<subject>_dev.csv`` (or ``directory/<subject>_dev.csv``). Prompt: the subject
    header, the question, ``"\\nA. ..."`` per choice, ``"\\nAnswer:"``; response prefix ``"The answer is:"``;
    answer ``" <letter>"``. Every row of a file is used (LESS takes the first 5; MMLU dev files have 5).
    Test rows: ``directory/test/<subject>_test.csv`` formatted the same way, or ``directory/test.jsonl``.
    """
    return mmlu_source(directory, name).load()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, f"invalid JSON ({exc.msg})", "repair or re-download the file") from None


def _resolve_file(path: str | Path, default_name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise InputError(path, None, "no such file", f"point at LESS's {default_name}")
    return path


def _bbh_rows(task: str, text: str, n_shot: int, path: Path) -> list[dict[str, Any]]:
    blocks = text.split("\n\n")
    if len(blocks) < n_shot:
        raise InputError(path, None, f"task {task!r} has {len(blocks)} examples, fewer than n_shot={n_shot}",
                         "separate the task prompt and each 'Q: ...\\nA: ...' example by a blank line")
    shots = []
    for block in blocks[-n_shot:]:
        question, marker, answer = block.partition("\nA:")
        if not marker:
            raise InputError(path, None, f"task {task!r}: example {block[:60]!r} has no '\\nA:'",
                             "each of the last n_shot blocks must be 'Q: ...\\nA: ...'")
        shots.append((question, answer))
    task_prompt = "\n\n".join(blocks[:-n_shot]).strip()
    rows = []
    for i, (question, answer) in enumerate(shots):
        # The other shots are the in-context examples, in their original order (LESS's form_icl).
        icl = "".join(q + "\nA:" + a + "\n\n" for j, (q, a) in enumerate(shots) if j != i)
        rows.append({"example_id": f"{task}-{i}", "subtask": task,
                     "prompt_messages": [user_message(task_prompt + "\n\n" + icl + question), prefix_message("A:")],
                     "answer": answer})
    return rows


def _bbh_frame(path: Path, n_shot: int) -> pl.DataFrame:
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(path, None, "expected an object mapping each task to its few-shot prompt text",
                         "use LESS's data/eval/bbh/bbh-three-shot.json layout")
    return _less_frame([row for task, text in data.items() for row in _bbh_rows(task, text, n_shot, path)], path)


def bbh_source(path: str | Path, name: str = "bbh", n_shot: int = 3) -> TargetSource:
    """LESS's BBH file as a target task (see :func:`load_bbh`); test split: ``test.jsonl`` beside the file."""
    path = _resolve_file(path, "bbh-three-shot.json")
    return TargetSource(name, partial(_bbh_frame, path, n_shot), *_test_beside(path))


def load_bbh(path: str | Path, name: str = "bbh", n_shot: int = 3) -> TargetTask:
    """BBH few-shot rows (LESS's ``bbh-three-shot.json``), one subtask per BBH task, and ``test.jsonl`` beside.

    Each task's text is split on blank lines: the last ``n_shot`` blocks are examples, the rest the task
    prompt. Each example becomes a row whose prompt is the task prompt, the other examples and its own
    question; response prefix ``"A:"``; answer = the text after ``"\\nA:"`` (chain of thought included).
    """
    return bbh_source(path, name, n_shot).load()


def _tydiqa_row(lang: str, index: int, example: Any, template: tuple[str, str, str, str],
                path: Path) -> dict[str, Any]:
    answers = example.get("answers") if isinstance(example, dict) else None
    if (not isinstance(answers, list) or not answers or not isinstance(answers[0], dict)
            or not isinstance(answers[0].get("text"), str)
            or not all(isinstance(example.get(k), str) for k in ("context", "question"))):
        raise InputError(path, None, f"{lang}[{index}] needs string 'context' and 'question' and "
                         "'answers': [{\"text\": ...}]", "use LESS's tydiqa-one-shot.json layout")
    instruction, passage, question, answer = template
    # As in LESS: no separator between the instruction and the passage label.
    prompt = f"{instruction}{passage} {example['context']}\n{question} {example['question']}\n"
    return {"example_id": f"{lang}-{index}", "subtask": lang,
            "prompt_messages": [user_message(prompt), prefix_message(answer)], "answer": " " + answers[0]["text"]}


def _tydiqa_frame(path: Path, zh: bool) -> pl.DataFrame:
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(path, None, "expected an object mapping each language to a list of examples",
                         "use LESS's data/eval/tydiqa/tydiqa-one-shot.json layout")
    rows = []
    for lang, examples in data.items():
        if lang not in TYDIQA_TEMPLATES:
            raise InputError(path, None, f"unknown language {lang!r}",
                             f"use one of {', '.join(TYDIQA_TEMPLATES)}")
        template = TYDIQA_TEMPLATE_ZH if zh else TYDIQA_TEMPLATES[lang]
        rows += [_tydiqa_row(lang, i, example, template, path) for i, example in enumerate(examples)]
    return _less_frame(rows, path)


def tydiqa_source(path: str | Path, name: str = "tydiqa", zh: bool | None = None) -> TargetSource:
    """LESS's TyDiQA file as a target task (see :func:`load_tydiqa`); test split: ``test.jsonl`` beside the file."""
    path = _resolve_file(path, "tydiqa-one-shot.json")
    zh = path.name.endswith("-zh.json") if zh is None else zh
    return TargetSource(name, partial(_tydiqa_frame, path, zh), *_test_beside(path))


def load_tydiqa(path: str | Path, name: str = "tydiqa", zh: bool | None = None) -> TargetTask:
    """TyDiQA one-shot rows (LESS's ``tydiqa-one-shot.json``), one subtask per language, and ``test.jsonl`` beside.

    Prompt: the language's instruction, passage and question; response prefix its answer label (e.g.
    ``"Answer:"``); answer ``" " + answers[0].text``. ``zh`` uses the Chinese templates for every language
    (LESS's ``tydiqa-one-shot-zh.json``); by default it is on when the file name ends in ``-zh.json``.
    Every example of a language is used (LESS uses the first; its one-shot file has one).
    """
    return tydiqa_source(path, name, zh).load()
