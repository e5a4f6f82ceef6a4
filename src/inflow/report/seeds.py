"""Multi-seed summary: mean ± std over seeds of each (target, method) row of ``reports/summary.json``.

``make results`` runs the whole pipeline once per seed (``flows/seeds.py``) and turns the per-seed summaries into
the markdown table of ``docs/results.md`` with :func:`aggregate_summaries` and :func:`format_markdown`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METRICS = ("test_loss", "exact_match", "selection_size", "in_family_share", "decoy_share", "harmful_share")
SEED_KEYS = ("benchmark.seed", "warmup.seed", "select.seed", "finetune.seed", "distill.seed")


def seed_overrides(seed: int) -> dict[str, int]:
    """The params changed for run ``seed``: every data, training and selection seed, and the model inits."""
    return {**{key: seed for key in SEED_KEYS}, "selector.seed": 2 * seed, "target.seed": 2 * seed + 1}


def apply_overrides(params: Mapping, overrides: Mapping[str, object]) -> dict:
    """A deep copy of a params dict with dotted keys (``"section.key"``) set; unknown keys are an error."""
    out = {section: dict(values) if isinstance(values, Mapping) else values for section, values in params.items()}
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        if section not in out or key not in out[section]:
            raise KeyError(f"{dotted} is not a params key; see params.yaml for the keys")
        out[section][key] = value
    return out


UNTARGETED = ("random", "random_in2core", "full")  # baselines that do not look at the target task
# the random baseline each targeted method is judged against: the one at its budget (default: random, select's)
RANDOM_OF = {"in2core": "random_in2core"}


def aggregate_summaries(summaries: Sequence[Mapping]) -> list[dict]:
    """Rows {target, method, n_seeds, <metric>_mean, <metric>_std, beats_random} over per-seed summaries.

    Each summary is a ``reports/summary.json`` dict (``{"rows": [{target, method, test_loss, ...}]}``). The std is
    the sample standard deviation (ddof=1; 0 for a single seed). ``beats_random`` (rows of a targeted method: not
    random or full) counts the seeds whose test loss is below the random baseline's at the method's budget
    (:data:`RANDOM_OF`) on the same target.
    """
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for summary in summaries:
        for row in summary["rows"]:
            groups.setdefault((row["target"], row["method"]), []).append(row)
    out = []
    for (target, method), rows in sorted(groups.items()):
        agg: dict = {"target": target, "method": method, "n_seeds": len(rows)}
        for metric in METRICS:
            values = np.array([r[metric] for r in rows if metric in r], dtype=np.float64)
            if values.size:
                agg[f"{metric}_mean"] = float(values.mean())
                agg[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        if method not in UNTARGETED:
            agg["beats_random"] = sum(_beats_random(s, target, method) for s in summaries)
        out.append(agg)
    return out


def _beats_random(summary: Mapping, target: str, method: str) -> bool:
    loss = {r["method"]: r["test_loss"] for r in summary["rows"] if r["target"] == target}
    baseline = RANDOM_OF.get(method, "random")
    return method in loss and baseline in loss and loss[method] < loss[baseline]


def format_markdown(rows: Sequence[Mapping], n_seeds: int) -> str:
    """A markdown table of aggregated rows: mean ± std of each metric, and each targeted method's wins over random."""
    header = ["target", "method", "test loss", "exact match", "k", "in-family share", "decoy share", "harmful share",
              "< random (loss)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["target"], row["method"]]
        for metric, digits in (("test_loss", 4), ("exact_match", 3), ("selection_size", 0), ("in_family_share", 3),
                               ("decoy_share", 3), ("harmful_share", 3)):
            mean = row.get(f"{metric}_mean")
            cells.append("" if mean is None else f"{mean:.{digits}f} ± {row[f'{metric}_std']:.{digits}f}")
        cells.append(f"{row['beats_random']}/{n_seeds}" if "beats_random" in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
