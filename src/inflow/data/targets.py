"""Target tasks: the validation rows that guide selection and the held-out test rows.

A target task is a folder ``<name>/`` with ``val.jsonl`` (few-shot rows used for selection, required) and
``test.jsonl`` (held out, used only for evaluation, optional). Rows::

    {"id"?: str, "subtask": str, "prompt": str, "answer": str}
    {"id"?: str, "subtask": str, "messages": [{"role": ..., "content": ...}, ...], "answer": str}

A ``prompt`` becomes one user message. ``messages`` may end with an assistant message: a response prefix
(e.g. ``"The answer is:"``) that the model reads before the answer. Other keys are ignored. Subtasks
need not have equal sizes.

The LESS evaluation layouts load directly, formatted exactly as LESS formats them for its validation
gradients (``less/data_selection/get_validation_dataset.py``); they give the validation split only:

- ``load_mmlu(dir)``: ``dir/dev/<subject>_dev.csv`` (no header: question, choices..., answer letter);
- ``load_bbh(path)``: ``bbh-three-shot.json``, ``{task: "<task prompt>\\n\\nQ: ...\\nA: ...\\n\\n..."}``;
- ``load_tydiqa(path)``: ``tydiqa-one-shot.json``, ``{language: [{"context", "question", "answers"}]}``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from inflow.data.pool import MESSAGES_DTYPE, IdRegistry, iter_json_lines, parse_id, parse_messages, stable_hash
from inflow.errors import InputError

log = logging.getLogger(__name__)

TARGET_SCHEMA = pl.Schema({"example_id": pl.String, "subtask": pl.String, "prompt_messages": MESSAGES_DTYPE,
                           "answer": pl.String})
MMLU_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

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


@dataclass(frozen=True, eq=False)
class TargetTask:
    """A named target task: ``val`` (used for selection) and ``test`` (held out), both in TARGET_SCHEMA."""

    name: str
    val: pl.DataFrame
    test: pl.DataFrame

    @property
    def subtasks(self) -> list[str]:
        """The sorted distinct subtasks of the validation split."""
        return sorted(self.val["subtask"].unique().to_list())


def empty_target_frame() -> pl.DataFrame:
    """A target split with no rows (the test split of a task that has none)."""
    return pl.DataFrame(schema=TARGET_SCHEMA)


def _target_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    columns = {name: [row[name] for row in rows] for name in TARGET_SCHEMA}
    return pl.DataFrame({name: pl.Series(values, dtype=TARGET_SCHEMA[name]) for name, values in columns.items()})


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def _prefix(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _parse_target_row(row: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InputError(path, line, "expected a JSON object", 'write {"subtask": ..., "prompt": ..., "answer": ...}')
    subtask = row.get("subtask")
    if not isinstance(subtask, str) or not subtask:
        raise InputError(path, line, "missing or empty 'subtask'", "label every row with its subtask (a string)")
    has_prompt, has_messages = "prompt" in row, "messages" in row
    if has_prompt == has_messages:
        raise InputError(path, line, "needs exactly one of 'prompt' and 'messages'" +
                         (" (has both)" if has_prompt else " (has neither)"),
                         "use 'prompt' for a single user turn, 'messages' for a conversation")
    if has_prompt:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise InputError(path, line, "'prompt' must be a non-empty string", "write the question as a string")
        prompt_messages = [_user(row["prompt"])]
    else:
        prompt_messages = parse_messages(row["messages"], path, line, need_assistant=False)
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise InputError(path, line, "missing or empty 'answer'", "give every row its answer as a non-empty string")
    content = {"subtask": subtask, "prompt_messages": prompt_messages, "answer": answer}
    given = parse_id(row, path, line)
    return {"example_id": given if given is not None else stable_hash(content), "hashed": given is None, **content}


def load_target_split(path: str | Path) -> pl.DataFrame:
    """Read one split (our JSONL form) into TARGET_SCHEMA; bad rows raise InputError with file and line.

    ``example_id`` is the given ``id``, else :func:`~inflow.data.pool.stable_hash` of
    ``{subtask, prompt_messages, answer}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file", "a target task folder needs val.jsonl (and optionally test.jsonl)")
    rows, registry = [], IdRegistry(path)
    for line, raw in iter_json_lines(path):
        row = _parse_target_row(raw, path, line)
        registry.add(row["example_id"], line, hashed=row.pop("hashed"))
        rows.append(row)
    if not rows:
        raise InputError(path, None, "the split has no rows", "write at least one row, or delete the file")
    return _target_frame(rows)


def load_target_task(directory: str | Path, name: str | None = None) -> TargetTask:
    """Read ``directory/val.jsonl`` (required) and ``directory/test.jsonl`` (optional) into a TargetTask.

    ``name`` defaults to the folder name. A missing test split becomes an empty frame.
    """
    directory = Path(directory)
    val = load_target_split(directory / "val.jsonl")
    test_path = directory / "test.jsonl"
    test = load_target_split(test_path) if test_path.exists() else empty_target_frame()
    task = TargetTask(name or directory.resolve().name, val, test)
    log.info("target task %s: %d val / %d test rows, %d subtasks", task.name, val.height, test.height,
             len(task.subtasks))
    return task


def load_target_tasks(root: str | Path) -> list[TargetTask]:
    """One TargetTask per sub-folder of ``root`` that holds a ``val.jsonl``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, None, "not a directory", "point data.targets at a folder of target-task folders")
    folders = sorted(p for p in root.iterdir() if (p / "val.jsonl").is_file())
    if not folders:
        raise InputError(root, None, "no sub-folder with a val.jsonl",
                         "lay out targets as <root>/<task>/val.jsonl (+ test.jsonl)")
    return [load_target_task(folder) for folder in folders]


def _less_task(name: str, rows: list[dict[str, Any]], path: Path) -> TargetTask:
    if not rows:
        raise InputError(path, None, "no examples found", "check that this is a LESS evaluation file or folder")
    return TargetTask(name, _target_frame(rows), empty_target_frame())


def _mmlu_subject(subject: str) -> str:
    # LESS prepends a space to every word, so its prompts read "about  college biology." (two spaces).
    return "".join(" " + word for word in subject.split("_"))


def _mmlu_rows(path: Path, subject: str) -> list[dict[str, Any]]:
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
            rows.append({"example_id": f"{subject}_dev_{len(rows)}", "subtask": subject,
                         "prompt_messages": [_user(prompt), _prefix("The answer is:")], "answer": " " + answer})
    return rows


def load_mmlu(directory: str | Path, name: str = "mmlu") -> TargetTask:
    """MMLU dev rows (LESS's MMLU validation set), one subtask per subject.

    Reads ``directory/dev/<subject>_dev.csv`` (or ``directory/<subject>_dev.csv``). Prompt: the subject
    header, the question, ``"\\nA. ..."`` per choice, ``"\\nAnswer:"``; response prefix ``"The answer is:"``;
    answer ``" <letter>"``. Every row of a file is used (LESS takes the first 5; MMLU dev files have 5).
    """
    directory = Path(directory)
    dev = directory / "dev" if (directory / "dev").is_dir() else directory
    files = sorted(dev.glob("*_dev.csv"))
    if not files:
        raise InputError(directory, None, "no <subject>_dev.csv files",
                         "point at the MMLU folder holding dev/<subject>_dev.csv (LESS: data/eval/mmlu)")
    rows = []
    for file in files:
        subject_rows = _mmlu_rows(file, file.name[: -len("_dev.csv")])
        if not subject_rows:
            raise InputError(file, None, "no rows", "remove the empty file or fill it")
        rows += subject_rows
    return _less_task(name, rows, directory)


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
                     "prompt_messages": [_user(task_prompt + "\n\n" + icl + question), _prefix("A:")],
                     "answer": answer})
    return rows


def load_bbh(path: str | Path, name: str = "bbh", n_shot: int = 3) -> TargetTask:
    """BBH few-shot rows (LESS's ``bbh-three-shot.json``), one subtask per BBH task.

    Each task's text is split on blank lines: the last ``n_shot`` blocks are examples, the rest the task
    prompt. Each example becomes a row whose prompt is the task prompt, the other examples and its own
    question; response prefix ``"A:"``; answer = the text after ``"\\nA:"`` (chain of thought included).
    """
    path = _resolve_file(path, "bbh-three-shot.json")
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(path, None, "expected an object mapping each task to its few-shot prompt text",
                         "use LESS's data/eval/bbh/bbh-three-shot.json layout")
    rows = [row for task, text in data.items() for row in _bbh_rows(task, text, n_shot, path)]
    return _less_task(name, rows, path)


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
            "prompt_messages": [_user(prompt), _prefix(answer)], "answer": " " + answers[0]["text"]}


def load_tydiqa(path: str | Path, name: str = "tydiqa", zh: bool | None = None) -> TargetTask:
    """TyDiQA one-shot rows (LESS's ``tydiqa-one-shot.json``), one subtask per language.

    Prompt: the language's instruction, passage and question; response prefix its answer label (e.g.
    ``"Answer:"``); answer ``" " + answers[0].text``. ``zh`` uses the Chinese templates for every language
    (LESS's ``tydiqa-one-shot-zh.json``); by default it is on when the file name ends in ``-zh.json``.
    Every example of a language is used (LESS uses the first; its one-shot file has one).
    """
    path = _resolve_file(path, "tydiqa-one-shot.json")
    if zh is None:
        zh = path.name.endswith("-zh.json")
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
    return _less_task(name, rows, path)
