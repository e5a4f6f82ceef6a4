"""What a seed changes (``make results`` runs the pipeline once per seed, ``flows/compare.py``) and which random
baseline judges each targeted method (used by :mod:`inflow.report.document`)."""

from __future__ import annotations

from collections.abc import Mapping

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
