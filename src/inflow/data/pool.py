"""The training pool: load, validate, identify and write candidate examples.

A pool file is JSON Lines (``.jsonl`` / ``.json``) or Parquet, one example per row in the Tulu v2 /
open-instruct shape::

    {"id": "...", "dataset": "...", "messages": [{"role": "user", "content": "..."}, ...], ...metadata}

``load_pool`` returns a polars frame with columns ``example_id, dataset, messages`` followed by the
metadata columns unchanged. ``example_id`` is the given ``id`` (``example_id`` is accepted as a synonym),
else :func:`content_hash` of the messages, so an example keeps its identity across runs and reorderings.
Every bad row raises :class:`~inflow.errors.InputError` naming the file and the 1-based line (for Parquet:
the 1-based row). ``write_pool_jsonl`` writes the same shape back, so selections are pools themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from inflow.data.render import ROLES, Message, render_chat
from inflow.errors import InputError

log = logging.getLogger(__name__)

MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
POOL_COLUMNS = ("example_id", "dataset", "messages")
_ID_KEYS = ("id", "example_id")
_JSON_SUFFIXES = (".jsonl", ".json")


def stable_hash(value: Any) -> str:
    """``"h"`` + the first 16 hex digits of sha256 over the canonical JSON of ``value``.

    Canonical JSON: sorted keys, no spaces, non-ASCII kept as UTF-8. Independent of dict key order.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def content_hash(messages: Sequence[Message]) -> str:
    """The example_id of a conversation without an id: :func:`stable_hash` of its ``[{role, content}]``."""
    return stable_hash([{"role": m["role"], "content": m["content"]} for m in messages])


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_value)`` for every non-blank line of a JSON Lines file (1-based lines)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(path, number, f"not valid UTF-8 ({exc.reason})", "save the file as UTF-8") from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                fix = "write one JSON object per line (JSON Lines)"
                if number == 1 and text.lstrip().startswith("["):
                    fix = "the file looks like one JSON array; " + fix
                raise InputError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})", fix) from None


def parse_messages(value: Any, path: Path, line: int, field: str = "messages",
                   need_assistant: bool = True) -> list[dict[str, str]]:
    """Validate a ``messages`` list and keep only ``role`` and ``content`` of each message.

    Raises InputError for a missing/empty list, a non-object message, an unknown role, non-string
    content, or (with ``need_assistant``) a conversation with no assistant message.
    """
    if value is None:
        raise InputError(path, line, f"no '{field}'", f"give each row a non-empty '{field}' list")
    if not isinstance(value, list) or not value:
        raise InputError(path, line, f"'{field}' must be a non-empty list, got {json.dumps(value)[:80]}",
                         "write [{\"role\": \"user\", \"content\": \"...\"}, ...]")
    messages = []
    for position, message in enumerate(value, 1):
        where = f"{field}[{position - 1}]"
        if not isinstance(message, dict):
            raise InputError(path, line, f"{where} is not an object", "write {\"role\": ..., \"content\": ...}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InputError(path, line, f"{where} has role {role!r}", f"use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise InputError(path, line, f"{where} content is {type(content).__name__}, not a string",
                             "write the content as a JSON string")
        messages.append({"role": role, "content": content})
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise InputError(path, line, f"'{field}' has no assistant message",
                         "a pool example needs at least one assistant turn to train on")
    return messages


def parse_id(row: dict[str, Any], path: Path, line: int) -> str | None:
    """The row's given id as a string (``id`` or its synonym ``example_id``), or None when it has none."""
    given = [row[k] for k in _ID_KEYS if row.get(k) is not None]
    if len(given) == 2 and str(given[0]) != str(given[1]):
        raise InputError(path, line, f"'id' {given[0]!r} and 'example_id' {given[1]!r} disagree", "keep only 'id'")
    if not given:
        return None
    value = given[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise InputError(path, line, f"'id' must be a non-empty string, got {json.dumps(value)[:80]}",
                         "write the id as a JSON string, or leave it out to use a content hash")
    return str(value)


def _parse_dataset(value: Any, path: Path, line: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(path, line, f"'dataset' must be a string, got {json.dumps(value)[:80]}",
                         "write the dataset name as a JSON string")
    return value


class IdRegistry:
    """Remembers the line of every example_id to report duplicates with both lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}

    def add(self, example_id: str, line: int, hashed: bool) -> None:
        """Record ``example_id`` at ``line``; raise InputError naming both lines if it was seen before."""
        first = self.lines.setdefault(example_id, line)
        if first != line:
            reason = (f"same content as line {first} (neither has an id, both hash to {example_id})" if hashed
                      else f"duplicate id {example_id!r} (also on line {first})")
            raise InputError(self.path, line, reason, "remove the duplicate row or give every row a unique id")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _metadata_frame(rows: list[dict[str, Any]], lines: list[int], path: Path) -> pl.DataFrame:
    """Extra columns as a frame (one row per example); a column must hold one JSON type in every row."""
    first_seen: dict[str, tuple[str, int]] = {}
    for row, line in zip(rows, lines):
        for key, value in row.items():
            if value is None:
                continue
            kind = _json_kind(value)
            seen = first_seen.setdefault(key, (kind, line))
            if seen[0] != kind:
                raise InputError(path, line, f"column '{key}' is {kind} here but {seen[0]} on line {seen[1]}",
                                 f"give '{key}' the same JSON type in every row (or null)")
    if not any(rows):
        return pl.DataFrame()
    try:
        return pl.DataFrame(rows, infer_schema_length=None)
    except Exception as exc:  # polars raises several types for nested values of mixed shapes
        raise InputError(path, None, f"metadata columns cannot form a table: {exc}".splitlines()[0],
                         "give every nested metadata field the same type in every row") from None


def _assemble(ids: list[str], datasets: list[str], messages: list[list[dict[str, str]]],
              extras: pl.DataFrame) -> pl.DataFrame:
    core = pl.DataFrame({"example_id": pl.Series(ids, dtype=pl.String),
                         "dataset": pl.Series(datasets, dtype=pl.String),
                         "messages": pl.Series(messages, dtype=MESSAGES_DTYPE)})
    return core.hstack(extras) if extras.width else core


def _load_json_lines(path: Path) -> pl.DataFrame:
    ids: list[str] = []
    datasets: list[str] = []
    messages: list[list[dict[str, str]]] = []
    extras: list[dict[str, Any]] = []
    lines: list[int] = []
    registry = IdRegistry(path)
    for line, row in iter_json_lines(path):
        if not isinstance(row, dict):
            raise InputError(path, line, f"expected a JSON object, got {_json_kind(row)}",
                             "write one {\"messages\": [...]} object per line")
        parsed = parse_messages(row.get("messages"), path, line)
        given = parse_id(row, path, line)
        example_id = given if given is not None else content_hash(parsed)
        registry.add(example_id, line, hashed=given is None)
        ids.append(example_id)
        datasets.append(_parse_dataset(row.get("dataset"), path, line))
        messages.append(parsed)
        extras.append({k: v for k, v in row.items() if k not in ("messages", "dataset", *_ID_KEYS)})
        lines.append(line)
    if not ids:
        raise InputError(path, None, "the pool file has no rows", "point data.pool at a non-empty JSONL/Parquet file")
    return _assemble(ids, datasets, messages, _metadata_frame(extras, lines, path))


def _load_parquet(path: Path) -> pl.DataFrame:
    table = pl.read_parquet(path)
    if table.height == 0:
        raise InputError(path, None, "the pool file has no rows", "point data.pool at a non-empty JSONL/Parquet file")
    if "messages" not in table.columns:
        raise InputError(path, None, f"no 'messages' column (columns: {', '.join(table.columns)})",
                         "store conversations in a list-of-struct column 'messages' with role and content")
    columns = {name: table[name].to_list() if name in table.columns else [None] * table.height
               for name in ("messages", "dataset", *_ID_KEYS)}
    ids, datasets, messages = [], [], []
    registry = IdRegistry(path)
    for index in range(table.height):
        row = {name: values[index] for name, values in columns.items()}
        line = index + 1
        parsed = parse_messages(row["messages"], path, line)
        given = parse_id(row, path, line)
        example_id = given if given is not None else content_hash(parsed)
        registry.add(example_id, line, hashed=given is None)
        ids.append(example_id)
        datasets.append(_parse_dataset(row["dataset"], path, line))
        messages.append(parsed)
    extras = table.drop([c for c in ("messages", "dataset", *_ID_KEYS) if c in table.columns])
    return _assemble(ids, datasets, messages, extras)


def load_pool(path: str | Path) -> pl.DataFrame:
    """Read and validate a pool file (JSON Lines or Parquet).

    Returns a frame with ``example_id`` (str), ``dataset`` (str, "" when absent), ``messages``
    (list of struct{role, content}), then the metadata columns in first-seen order with their types.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no such file", "check data.pool in params.yaml")
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        frame = _load_json_lines(path)
    elif suffix == ".parquet":
        frame = _load_parquet(path)
    else:
        raise InputError(path, None, f"unknown pool format '{suffix}'", "use .jsonl, .json (JSON Lines) or .parquet")
    log.info("loaded %d pool examples from %s", frame.height, path)
    return frame


def write_pool_jsonl(df: pl.DataFrame, path: str | Path) -> None:
    """Write pool rows as JSON Lines in the pool's own shape (``id`` = example_id, dataset, messages, metadata).

    The file is written next to ``path`` and renamed into place, so a reader never sees half a file.
    ``load_pool`` reads it back to an equal frame; values JSON cannot hold (dates) are written as strings.
    """
    missing = [c for c in POOL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a pool frame: missing column(s) {', '.join(missing)} (build it with load_pool)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = [c for c in df.columns if c not in POOL_COLUMNS]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in df.iter_rows(named=True):
            record = {"id": row["example_id"], "dataset": row["dataset"], "messages": row["messages"]}
            record.update((name, row[name]) for name in extra)
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def pool_texts(df: pl.DataFrame, eos: str) -> list[str]:
    """The rendered Tulu-format text of every pool row (see :func:`inflow.data.render.render_chat`)."""
    return [render_chat(messages, eos) for messages in df["messages"].to_list()]
