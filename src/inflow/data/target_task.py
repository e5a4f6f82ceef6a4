"""What every targets format shares: :class:`TargetTask`, :class:`TargetSource`, the row schema, row ids,
and :func:`load_target_split`, the reader of one split in our JSONL form (see ``inflow.data.targets``).

``inflow.data.targets`` (our folder layout, and the entry points ``load_targets`` / ``validate_targets``) and
``inflow.data.less_layouts`` (LESS's MMLU / BBH / TyDiQA files) both build their tasks here.

Row ids (:class:`SplitIds`): a row's ``example_id`` is its given ``id`` (unique within the split, or an error
naming both lines), else the content hash of ``{subtask, prompt_messages, answer}``; the k-th repeat of the
same content (k >= 2) gets ``"<hash>-<k>"``. Repeated questions in a test or validation set are legitimate, and
the ids stay unique within the split (one gradient store per task validation split is keyed by them) and
stable: an unchanged row keeps its id when other rows are added, removed or reordered, so a store built on
the split only grows (a position-derived id would shift and make the store refuse every row after an edit).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from inflow.data.pool import MESSAGES_DTYPE, iter_json_lines, parse_id, parse_messages, stable_hash
from inflow.errors import InputError

log = logging.getLogger(__name__)

TARGET_SCHEMA = pl.Schema({"example_id": pl.String, "subtask": pl.String, "prompt_messages": MESSAGES_DTYPE,
                           "answer": pl.String})


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


@dataclass(frozen=True)
class TargetSource:
    """A target task found on disk but not read yet: how to read each split (for loading and validation).

    ``read_test`` is None when no test split exists; ``test_path`` is where it is (or would be) and
    ``test_hint`` says how to give one, for the error that reports it missing.
    """

    name: str
    read_val: Callable[[], pl.DataFrame]
    read_test: Callable[[], pl.DataFrame] | None
    test_path: Path
    test_hint: str

    def load(self) -> TargetTask:
        """Read both splits; a missing test split becomes an empty frame (evaluation refuses the task)."""
        val = self.read_val()
        test = self.read_test() if self.read_test is not None else empty_target_frame()
        task = TargetTask(self.name, val, test)
        log.info("target task %s: %d val / %d test rows, %d subtasks", task.name, val.height, test.height,
                 len(task.subtasks))
        return task


def empty_target_frame() -> pl.DataFrame:
    """A target split with no rows (the test split of a task that has none)."""
    return pl.DataFrame(schema=TARGET_SCHEMA)


def target_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows with the TARGET_SCHEMA keys as a frame in that schema."""
    columns = {name: [row[name] for row in rows] for name in TARGET_SCHEMA}
    return pl.DataFrame({name: pl.Series(values, dtype=TARGET_SCHEMA[name]) for name, values in columns.items()})


def user_message(content: str) -> dict[str, str]:
    """A user turn of a target prompt."""
    return {"role": "user", "content": content}


def prefix_message(content: str) -> dict[str, str]:
    """A trailing assistant turn: the response prefix read before the answer (``"The answer is:"``)."""
    return {"role": "assistant", "content": content}


class SplitIds:
    """Assigns the ``example_id`` of every row of one split file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, tuple[int, bool]] = {}  # id -> (line, given)
        self.repeats: Counter[str] = Counter()

    def assign(self, given: str | None, content: dict[str, Any], line: int) -> str:
        """The id of the row at ``line``: ``given``, else the content hash (``-k`` on the k-th repeat).

        Raises InputError naming both lines when the id was already taken in this split.
        """
        if given is not None:
            self._claim(given, line, given=True)
            return given
        base = stable_hash(content)
        self.repeats[base] += 1
        count = self.repeats[base]
        example_id = base if count == 1 else f"{base}-{count}"
        self._claim(example_id, line, given=False)
        return example_id

    def _claim(self, example_id: str, line: int, given: bool) -> None:
        first = self.lines.setdefault(example_id, (line, given))
        if first == (line, given):
            return
        first_line, first_given = first
        if given and first_given:
            raise InputError(self.path, line, f"duplicate id {example_id!r} (also on line {first_line})",
                             "give every row a unique id, or leave 'id' out to have one derived")
        given_line, derived_line = (line, first_line) if given else (first_line, line)
        raise InputError(self.path, line, f"id {example_id!r} is given on line {given_line} and also derived for "
                         f"the row without id on line {derived_line}", "choose another id for the row that gives it")


def _parse_target_row(row: Any, path: Path, line: int) -> dict[str, Any]:
    """``{subtask, prompt_messages, answer}`` of one JSONL row; InputError naming file and line if bad."""
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
        prompt_messages = [user_message(row["prompt"])]
    else:
        prompt_messages = parse_messages(row["messages"], path, line, need_assistant=False)
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise InputError(path, line, "missing or empty 'answer'", "give every row its answer as a non-empty string")
    return {"subtask": subtask, "prompt_messages": prompt_messages, "answer": answer}


def load_target_split(path: str | Path) -> pl.DataFrame:
    """Read one split (our JSONL form) into TARGET_SCHEMA; bad rows raise InputError with file and line.

    ``example_id``: the given ``id`` (unique in the file), else the content hash, see :class:`SplitIds`.
    Repeated rows without ids are kept (a test set may ask the same question twice).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file", "a target task folder needs val.jsonl (and optionally test.jsonl)")
    rows, ids = [], SplitIds(path)
    for line, raw in iter_json_lines(path):
        content = _parse_target_row(raw, path, line)
        rows.append({"example_id": ids.assign(parse_id(raw, path, line), content, line), **content})
    if not rows:
        raise InputError(path, None, "the split has no rows", "write at least one row, or delete the file")
    return target_frame(rows)
