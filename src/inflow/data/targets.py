"""Target tasks: the validation rows that guide selection and the held-out test rows that evaluation scores.

Entry points: :func:`load_targets` (every task of ``data.targets`` in ``data.targets_format``) and
:func:`validate_targets` (read every split of every task and report all problems in one error, before any
stage runs). Formats (``data.targets_format``):

- ``jsonl`` (default): ``data.targets`` is a folder with one sub-folder per task, ``<task>/val.jsonl`` (few-shot
  rows used for selection, required) and ``<task>/test.jsonl`` (held out, used only for evaluation);
- ``mmlu`` / ``bbh`` / ``tydiqa``: LESS's evaluation files, one task each, formatted as LESS formats them; the
  test split is MMLU's ``test/`` CSVs or a ``test.jsonl`` beside the file (``inflow.data.less_layouts``).

JSONL rows::

    {"id"?: str, "subtask": str, "prompt": str, "answer": str}
    {"id"?: str, "subtask": str, "messages": [{"role": ..., "content": ...}, ...], "answer": str}

A ``prompt`` becomes one user message. ``messages`` may end with an assistant message: a response prefix
(e.g. ``"The answer is:"``) that the model reads before the answer. Other keys are ignored. Subtasks
need not have equal sizes. ``id`` is optional: without it the row's id is derived from its content, and
repeated rows are fine (``inflow.data.target_task.SplitIds``); given ids must be unique within the file.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from inflow.data.less_layouts import (MMLU_LETTERS, TYDIQA_TEMPLATE_ZH, TYDIQA_TEMPLATES, bbh_source, load_bbh,
                                      load_mmlu, load_tydiqa, mmlu_source, tydiqa_source)
from inflow.data.target_task import (TARGET_SCHEMA, TargetSource, TargetTask, empty_target_frame, load_target_split,
                                     target_frame)
from inflow.errors import InflowError, InputError

if TYPE_CHECKING:
    from inflow.config import DataConfig

__all__ = [
    "MMLU_LETTERS", "TARGETS_FORMATS", "TARGET_SCHEMA", "TYDIQA_TEMPLATES", "TYDIQA_TEMPLATE_ZH", "TargetSource",
    "TargetTask", "TargetsError", "empty_target_frame", "load_bbh", "load_mmlu", "load_target_split",
    "load_target_task", "load_target_tasks", "load_targets", "load_targets_at", "load_tydiqa", "target_frame",
    "target_sources", "validate_targets",
]

TARGETS_FORMATS = ("jsonl", "mmlu", "bbh", "tydiqa")
"""The values of ``data.targets_format``."""


class TargetsError(InflowError):
    """One or more target tasks cannot be read or evaluated; ``problems`` lists each with its fix."""

    def __init__(self, targets: str | Path, targets_format: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"data.targets {targets} ({targets_format} format): {len(problems)} problem(s)\n{lines}")
        self.problems = problems


def _folder_source(folder: Path, name: str | None = None) -> TargetSource:
    test = folder / "test.jsonl"
    return TargetSource(name or folder.resolve().name, partial(load_target_split, folder / "val.jsonl"),
                        partial(load_target_split, test) if test.exists() else None, test,
                        f"add {test}: held-out rows in the same form as val.jsonl")


def _task_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError(root, None, "not a directory", "point data.targets at a folder of target-task folders "
                         "(or set data.targets_format for a LESS file)")
    folders = sorted(p for p in root.iterdir() if (p / "val.jsonl").is_file())
    if not folders:
        raise InputError(root, None, "no sub-folder with a val.jsonl",
                         "lay out targets as <root>/<task>/val.jsonl (+ test.jsonl)")
    return folders


def load_target_task(directory: str | Path, name: str | None = None) -> TargetTask:
    """Read ``directory/val.jsonl`` (required) and ``directory/test.jsonl`` (optional) into a TargetTask.

    ``name`` defaults to the folder name. A missing test split becomes an empty frame.
    """
    return _folder_source(Path(directory), name).load()


def load_target_tasks(root: str | Path) -> list[TargetTask]:
    """One TargetTask per sub-folder of ``root`` that holds a ``val.jsonl``, sorted by name (``jsonl`` format)."""
    return [_folder_source(folder).load() for folder in _task_folders(Path(root))]


def target_sources(targets: str | Path, targets_format: str) -> list[TargetSource]:
    """The tasks at ``targets`` in ``targets_format``, not read yet (InputError when none are found)."""
    if targets_format == "jsonl":
        return [_folder_source(folder) for folder in _task_folders(Path(targets))]
    makers = {"mmlu": mmlu_source, "bbh": bbh_source, "tydiqa": tydiqa_source}
    if targets_format not in makers:
        raise InflowError(f"data.targets_format is {targets_format!r}; use one of {', '.join(TARGETS_FORMATS)}")
    return [makers[targets_format](targets)]


def load_targets_at(targets: str | Path, targets_format: str) -> list[TargetTask]:
    """Every target task at ``targets`` in ``targets_format`` (both splits; a missing test split is empty)."""
    return [source.load() for source in target_sources(targets, targets_format)]


def load_targets(data: DataConfig) -> list[TargetTask]:
    """Every target task of ``data.targets`` in ``data.targets_format``: the one entry point of the stages.

    Selection needs only ``val``; evaluation refuses a task whose ``test`` is empty (run
    :func:`validate_targets` first to report that before any stage runs).
    """
    return load_targets_at(data.targets, data.targets_format)


def _read(read: Callable[[], pl.DataFrame], problems: list[str]) -> pl.DataFrame | None:
    """``read()``, or None with the reason appended to ``problems``."""
    try:
        return read()
    except InflowError as exc:
        problems.append(str(exc))
    except OSError as exc:
        problems.append(f"{exc.filename or exc}: cannot be read ({exc.strerror or exc}); check the file's "
                        "permissions or copy it again")
    return None


def _source_problems(source: TargetSource) -> list[str]:
    problems: list[str] = []
    val = _read(source.read_val, problems)
    if source.read_test is None:
        problems.append(f"target task {source.name}: no test split at {source.test_path}, so it cannot be "
                        f"evaluated ({source.test_hint})")
        return problems
    test = _read(source.read_test, problems)
    if val is not None and test is not None:
        tested = set(test["subtask"].to_list())
        untested = [s for s in TargetTask(source.name, val, test).subtasks if s not in tested]
        if untested:
            shown = ", ".join(untested[:10]) + (f" and {len(untested) - 10} more" if len(untested) > 10 else "")
            problems.append(f"target task {source.name}: subtask(s) {shown} have validation rows but no test rows in "
                            f"{source.test_path} (add test rows with those subtask labels, or remove their "
                            "validation rows)")
    return problems


def _stray_folders(root: Path) -> list[str]:
    """Sub-folders of a ``jsonl`` targets root with split files but no val.jsonl (silently skipped otherwise)."""
    return [f"{folder}: has {', '.join(sorted(p.name for p in folder.glob('*.jsonl')))} but no val.jsonl, so it is "
            "not a target task (add its val.jsonl, or move the folder out of data.targets)"
            for folder in sorted(root.iterdir())
            if folder.is_dir() and not (folder / "val.jsonl").exists() and any(folder.glob("*.jsonl"))]


def validate_targets(data: DataConfig) -> list[str]:
    """Read every split of every target task and raise one :class:`TargetsError` listing every problem.

    Problems: a file that cannot be read or parsed (path, line, fix), a task without a test split (it
    could be selected for but never evaluated), a validation subtask without test rows, a ``jsonl`` task
    folder without val.jsonl. Returns the task names when there is none.
    """
    try:
        sources = target_sources(data.targets, data.targets_format)
    except InflowError as exc:
        raise TargetsError(data.targets, data.targets_format, [str(exc)]) from None
    problems = [p for source in sources for p in _source_problems(source)]
    if data.targets_format == "jsonl":
        problems += _stray_folders(Path(data.targets))
    if problems:
        raise TargetsError(data.targets, data.targets_format, problems)
    return [source.name for source in sources]
