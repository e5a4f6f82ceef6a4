"""The few domain exceptions of inflow.

Every user-facing error says what was wrong and what to do about it. ``assert`` is kept for internal
invariants only.
"""

from __future__ import annotations

from pathlib import Path


class InflowError(Exception):
    """Base class: a problem the user can fix (bad input, stale store, wrong setting)."""


class ConfigError(InflowError):
    """A params.yaml section or key is missing, unknown, of the wrong type or out of range."""


class InputError(InflowError):
    """A bad row in an input file; the message names the file, the line and the fix."""

    def __init__(self, path: str | Path, line: int | None, reason: str, fix: str = "") -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        message = f"{where}: {reason}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
        self.path = str(path)
        self.line = line
        self.reason = reason


class StoreMismatchError(InflowError):
    """A gradient store was built with other settings than the ones asked for now (``problems``: one line per
    difference, when known)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class StoreCorruptError(InflowError):
    """A chunk of a gradient store fails its checksum or is missing."""


class CheckpointError(InflowError):
    """A warmup checkpoint is incomplete, or its optimizer state does not match the LoRA parameters."""
