"""Each stage flow run's Markdown summary artifact (the Prefect UI's Artifacts tab and the flow run's page).

:func:`render_stage_markdown` is pure: the stage's name, its parameters (plus the params.yaml keys dvc.yaml says
the stage depends on), its wall time, a table of the manifest's scalar facts and the figures it wrote.
:func:`publish_stage_summary` gathers those from the running flow and publishes them; a failure only warns.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FIGURE_SUFFIXES = (".png", ".svg", ".html", ".md")
"""Files a stage writes that a person looks at (listed by path: the UI cannot load local files)."""
VALUE_CHARS = 80
"""A table cell's longest value; longer ones end with an ellipsis."""
MAX_ROWS = 80
"""The most rows of one table; the rest are counted in a last row."""


def artifact_key(stage: str) -> str:
    """Prefect's artifact key of a stage: lowercase letters, digits and dashes (``features@pool`` ->
    ``stage-features-pool``)."""
    return "stage-" + (re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-") or "unnamed")


def format_value(value: Any, limit: int = VALUE_CHARS) -> str:
    """One table cell: numbers compact, lists by length (short lists of scalars inline), dicts by their keys'
    count (or inline when short), text truncated; escaped for a Markdown table."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:.6g}" if math.isfinite(value) else str(value)
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        inline = "[" + ", ".join(format_value(v, limit) for v in value) + "]"
        scalars = all(not isinstance(v, (list, tuple, dict)) for v in value)
        text = inline if scalars and len(inline) <= limit else _count(len(value), "item")
    elif isinstance(value, Mapping):
        inline = "{" + ", ".join(f"{k}: {format_value(v, limit)}" for k, v in value.items()) + "}"
        scalars = all(not isinstance(v, (list, tuple, dict)) for v in value.values())
        text = inline if scalars and len(inline) <= limit else _count(len(value), "key")
    else:
        text = str(value)
    text = " ".join(text.split())  # one line
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def flatten(value: Any, prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Nested dicts as dotted keys, ``depth`` levels below the top (deeper ones stay whole, for
    :func:`format_value` to summarise); a top-level list is keyed by index."""
    if isinstance(value, (list, tuple)) and not prefix:
        value = {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, Mapping):
        return {prefix or "value": value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(inner, Mapping) and inner and depth > 0:
            flat.update(flatten(inner, name, depth - 1))
        else:
            flat[name] = inner
    return flat


def _table(header: tuple[str, str], rows: Mapping[str, Any]) -> list[str]:
    items = list(rows.items())
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {format_value(k)} | {format_value(v)} |" for k, v in items[:MAX_ROWS]]
    if len(items) > MAX_ROWS:
        lines.append(f"| … | {len(items) - MAX_ROWS} more |")
    return lines


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``1 h 02 min 03 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def render_stage_markdown(stage: str, manifest: Any, seconds: float, figures: Iterable[str | Path],
                          parameters: Mapping[str, Any], stage_params: Mapping[str, Any] | None = None) -> str:
    """The Markdown summary of one stage run: title, parameters (the flow's, then ``stage_params``: the
    params.yaml values the stage depends on, flattened), wall time, the manifest's facts and the figures."""
    lines = [f"# Stage `{stage}`", "", f"**Wall time:** {format_seconds(seconds)}", "", "## Parameters", ""]
    lines += _table(("parameter", "value"), parameters)
    if stage_params:
        lines += ["", "### params.yaml keys of this stage (dvc.yaml)", ""]
        lines += _table(("key", "value"), flatten(stage_params, depth=1))
    lines += ["", "## Result", ""]
    facts = flatten(manifest)
    lines += _table(("fact", "value"), facts) if facts else ["(empty)"]
    figures = sorted({str(f) for f in figures})
    lines += ["", "## Figures and reports", ""]
    lines += [f"- `{f}`" for f in figures] if figures else ["(none written)"]
    return "\n".join(lines) + "\n"


def _manifest_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for inner in value.values():
            yield from _manifest_strings(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _manifest_strings(inner)


def figures_written(since: float, manifest: Any = None, roots: Iterable[str | Path] = ("reports",)) -> list[str]:
    """Figure and report files (:data:`FIGURE_SUFFIXES`) modified at or after ``since`` (``time.time()``, one
    second of slack for coarse file clocks) under ``roots``, plus existing ones the manifest names."""
    found = {str(p) for root in roots if Path(root).is_dir() for p in Path(root).rglob("*")
             if p.suffix in FIGURE_SUFFIXES and p.is_file() and p.stat().st_mtime >= since - 1.0}
    found |= {s for s in _manifest_strings(manifest) if s.endswith(FIGURE_SUFFIXES) and Path(s).is_file()}
    return sorted(found)


def dvc_stage_params(stage: str, params_path: str | Path, dvc_file: str | Path = "dvc.yaml") -> dict[str, Any]:
    """The values (defaults filled in) of the params keys ``dvc_file`` lists for ``stage`` (``flow@item`` for a
    foreach stage); {} when there is no such file or stage."""
    from flows.common import dvc_stage  # common imports this module at its top
    from inflow.config import load_params, params_to_dict

    spec = dvc_stage(stage, Path(dvc_file))
    keys = [k for k in spec.get("params", []) if isinstance(k, str)]
    if not keys:
        return {}
    values = params_to_dict(load_params(params_path))
    chosen: dict[str, Any] = {}
    for key in keys:
        node: Any = values
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        chosen[key] = node
    return chosen


def publish_stage_summary(stage: str, manifest: Any, seconds: float, parameters: Mapping[str, Any],
                          since: float) -> None:
    """Render the stage's summary and create it as a Markdown artifact of the running flow run. Never raises:
    a failure (no API, an unreadable dvc.yaml) is logged as a warning and the stage goes on."""
    log = _logger()
    try:
        from prefect.artifacts import create_markdown_artifact

        try:
            stage_params = dvc_stage_params(stage, parameters.get("params_path", "params.yaml"))
        except Exception as exc:  # noqa: BLE001 - the summary is best effort
            log.warning("stage summary of %s: no dvc.yaml params (%s)", stage, exc)
            stage_params = {}
        markdown = render_stage_markdown(stage, manifest, seconds, figures_written(since, manifest), parameters,
                                         stage_params)
        create_markdown_artifact(markdown=markdown, key=artifact_key(stage), description=f"Stage {stage} summary")
    except Exception as exc:  # noqa: BLE001 - an artifact must never fail the stage
        log.warning("could not publish the summary artifact of stage %s: %s", stage, exc)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context
        return logging.getLogger(__name__)
