"""Build and print the summary: per target task x method, test loss, exact match and selection size.

The composition columns (``in_family_share``, ``decoy_share``, ``harmful_share``) need the ground-truth
columns only the built-in benchmark's pool carries (``family``, ``kind``, ``harmful``); on any other pool they
are left out, and the summary says so in its ``notes`` and in a log line.

Run as ``python -m inflow.report.summary reports/summary.json`` to print a saved summary as a table.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from inflow.selection import read_selection
from inflow.selection.outputs import ALL_TARGETS

log = logging.getLogger(__name__)

GROUND_TRUTH = ("family", "kind", "harmful")
COMPOSITION = ("in_family_share", "in_family_harmful_share", "other_share", "decoy_share", "harmful_share",
               "family_harmful_rate")


def ground_truth_note(pool: pl.DataFrame) -> str | None:
    """Why the composition columns are missing (None when the pool has every ground-truth column)."""
    missing = [c for c in GROUND_TRUTH if c not in pool.columns]
    if not missing:
        return None
    return (f"no selection composition ({', '.join(COMPOSITION)}): the pool has no ground-truth column(s) "
            f"{', '.join(missing)}, which only the built-in benchmark's pool carries")


def composition(selected: pl.DataFrame, pool: pl.DataFrame, target: str) -> dict:
    """Ground-truth make-up of a selection (benchmark pools only), shares of its rows: the target's own family
    (``in_family_share``, its precision; of which wrong-answer rows: ``in_family_harmful_share``), other skills
    (``other_share``: other families and distractors), lexical decoys, harmful rows of any family; and the family's
    own harmful rate in the pool (``family_harmful_rate``), what an indifferent selection would keep."""
    if not all(c in pool.columns for c in GROUND_TRUTH):
        return {}
    rows = selected.join(pool.select("example_id", *GROUND_TRUTH), on="example_id", how="left")
    n = max(1, len(rows))
    own = (pl.col("family") == target) & (pl.col("kind") == "target")
    in_family = rows.filter(own)
    decoys = rows.filter(pl.col("kind") == "decoy")
    family = pool.filter(own)
    return {
        "in_family_share": len(in_family) / n,
        "in_family_harmful_share": len(in_family.filter(pl.col("harmful"))) / n,
        "other_share": (len(rows) - len(in_family) - len(decoys)) / n,
        "decoy_share": len(decoys) / n,
        "harmful_share": len(rows.filter(pl.col("harmful"))) / n,
        "family_harmful_rate": len(family.filter(pl.col("harmful"))) / max(1, len(family)),
    }


def build_summary(methods: Sequence[str], metrics_dir: Path, selections_dir: Path, pool: pl.DataFrame) -> list[dict]:
    """One row per (target, method) from ``metrics/<method>.json`` and the selection tables.

    Logs :func:`ground_truth_note` when the composition columns are left out.
    """
    note = ground_truth_note(pool)
    if note:
        log.info("summary: %s", note)
    rows = []
    for method in methods:
        metrics = json.loads((metrics_dir / f"{method}.json").read_text())
        table = read_selection(selections_dir / method)
        for model_target, per_task in metrics.items():
            for task, m in per_task.items():
                if model_target not in (ALL_TARGETS, task):
                    continue
                selected = table.filter(pl.col("target") == model_target)
                rows.append({"target": task, "method": method, "test_loss": m["loss"],
                             "exact_match": m["exact_match"], "selection_size": len(selected), "pool_size": len(pool),
                             **composition(selected, pool, task)})
    return sorted(rows, key=lambda r: (r["target"], r["method"]))


def summarize(methods: Sequence[str], metrics_dir: Path, selections_dir: Path, pool: pl.DataFrame) -> dict:
    """The content of reports/summary.json: ``{"rows", "methods", "notes"}`` (notes: what was left out, why)."""
    note = ground_truth_note(pool)
    return {"rows": build_summary(methods, metrics_dir, selections_dir, pool), "methods": list(methods),
            "notes": [note] if note else []}


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of summary rows."""
    cols = ["target", "method", "test_loss", "exact_match", "selection_size", "in_family_share", "harmful_share"]
    cols = [c for c in cols if any(c in r for r in rows)]
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(argv[0] if argv else "reports/summary.json")
    if not path.exists():
        print(f"{path}: no summary yet; run `make run` (or `dvc repro`) first", file=sys.stderr)
        return 1
    summary = json.loads(path.read_text())
    print(format_table(summary["rows"]))
    for note in summary.get("notes", []):
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
