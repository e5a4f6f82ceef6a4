"""The comparison report: per-seed result rows → aggregated table, headline claims, transfer, Markdown and HTML.

A result row is a plain dict (one per seed, target model, budget, target task and method; see :func:`aggregate`).
:func:`write_report` is the entry point: it aggregates the rows, checks the headline claims, draws the figures of
:mod:`inflow.report.figures` and writes ``report.md``, a self-contained ``report.html`` (images inlined as
``data:`` URIs, no external reference, :mod:`inflow.report.html`) and ``results.json``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from inflow.report import figures
from inflow.report.figures import percent
from inflow.report.html import render_html
from inflow.report.seeds import RANDOM_OF, UNTARGETED

REQUIRED = ("seed", "model", "budget", "target", "method", "test_loss")
METRICS = ("test_loss", "exact_match", "selection_size", "in_family_share", "in_family_harmful_share", "other_share",
           "decoy_share", "harmful_share", "family_harmful_rate", "selection_seconds", "finetune_seconds")
COMPOSITION = (("in_family_share", "in-family (precision)"), ("in_family_harmful_share", "in-family harmful"),
               ("other_share", "other skills"), ("decoy_share", "decoys"), ("harmful_share", "harmful (any family)"))
TITLE = "Training-data selection: comparison report"
INTRO = ("Each method selects training rows from the pool for one target task; the target model is fine-tuned on "
         "the selection and judged by its held-out test loss (lower is better), mean ± std over seeds.")
Key = tuple[str, float, str, str]  # (model, budget, target, method)


def baseline_of(method: str) -> str | None:
    """The random baseline a targeted method is judged against at its own budget; None for an untargeted one."""
    return None if method in UNTARGETED else RANDOM_OF.get(method, "random")


def _key(row: Mapping) -> Key:
    return str(row["model"]), float(row["budget"]), str(row["target"]), str(row["method"])


def aggregate(rows: Sequence[Mapping]) -> list[dict]:
    """Mean and sample std over seeds of each (model, budget, target, method), sorted by that key.

    Each row has ``seed, model, budget, target, method, test_loss`` and optionally any of :data:`METRICS` (absent
    or None: unknown). Out: ``{model, budget, target, method, n_seeds, <metric>_mean, <metric>_std}`` for every
    metric with a value (std with ddof=1, 0.0 for one seed); targeted methods add ``beats_random``, the seeds whose
    test loss is below the matching random baseline's (:func:`baseline_of`, same seed, model, budget and target),
    and ``n_compared``, the seeds that have such a baseline.
    """
    loss: dict[tuple[int, Key], float] = {}
    groups: dict[Key, list[Mapping]] = {}
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"result row {i} lacks {missing}: every row needs {', '.join(REQUIRED)}")
        seed, key = int(row["seed"]), _key(row)
        if (seed, key) in loss:
            raise ValueError(f"two result rows for seed {seed} and (model, budget, target, method) {key}: "
                             "load each run's results once")
        loss[seed, key] = float(row["test_loss"])
        groups.setdefault(key, []).append(row)
    out = []
    for key in sorted(groups):
        model, budget, target, method = key
        agg: dict = {"model": model, "budget": budget, "target": target, "method": method,
                     "n_seeds": len(groups[key])}
        for metric in METRICS:
            values = np.array([r[metric] for r in groups[key] if r.get(metric) is not None], dtype=np.float64)
            if values.size:
                agg[f"{metric}_mean"] = float(values.mean())
                agg[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        baseline = baseline_of(method)
        if baseline is not None:
            pairs = [(loss[int(r["seed"]), key], loss.get((int(r["seed"]), (model, budget, target, baseline))))
                     for r in groups[key]]
            compared = [(own, random) for own, random in pairs if random is not None]
            agg["beats_random"] = sum(own < random for own, random in compared)
            agg["n_compared"] = len(compared)
        out.append(agg)
    return out


def _all(verdicts: Sequence[bool | None]) -> bool | None:
    """Three-valued AND: False if any comparison fails, None if any is missing (or there are none), else True."""
    if any(v is False for v in verdicts):
        return False
    return None if not verdicts or any(v is None for v in verdicts) else True


def _claim(claim: str, holds: bool | None, evidence: str) -> dict:
    return {"claim": claim, "holds": holds, "evidence": evidence}


Means = Mapping[tuple[str, str], Mapping]  # (target, method) -> aggregated row


def _mean(table: Means, target: str, method: str, metric: str) -> float | None:
    row = table.get((target, method))
    return None if row is None else row.get(f"{metric}_mean")


def headline_claims(agg: Sequence[Mapping], default_model: str, default_budget: float) -> list[dict]:
    """The four headline claims, each ``{claim, holds, evidence}``, from the means at the default model and budget.

    ``holds`` is None when the rows a claim needs are missing. The claims: (a) every targeted method at the budget
    (in2core has its own) has a lower mean test loss than random on every target; (b) LESS selects a lower decoy
    share than BM25 on every target; (c) among LESS's in-family rows the harmful rate
    (``in_family_harmful_share / in_family_share``) is below the family's rate in the pool; (d) LESS's loss is at
    most the full pool's (any budget, the largest) on at least two thirds of the targets, rounded up.
    """
    rows = [r for r in agg if r["model"] == default_model]
    targets = sorted({r["target"] for r in rows})
    at = {(r["target"], r["method"]): r for r in rows if r["budget"] == default_budget}
    full = {(r["target"], r["method"]): r for r in sorted(rows, key=lambda r: r["budget"]) if r["method"] == "full"}
    return [_claim_beats_random(at, targets, default_model, default_budget), _claim_decoys(at, targets),
            _claim_harmful(at, targets), _claim_full(at, full, targets)]


def _claim_beats_random(at: Means, targets: Sequence[str], model: str, budget: float) -> dict:
    pct = percent(budget)
    verdicts, parts = [], []
    for method in sorted({m for _, m in at if baseline_of(m) == "random"}):
        failed, missing = [], []
        for target in targets:
            own, random = _mean(at, target, method, "test_loss"), _mean(at, target, "random", "test_loss")
            verdicts.append(None if own is None or random is None else own < random)
            if verdicts[-1] is None:
                missing.append(target)
            elif not verdicts[-1]:
                failed.append(f"{target} ({own:.4f} vs random {random:.4f})")
        notes = ([f"fails on {', '.join(failed)}"] if failed else []) + (
            [f"not measured on {', '.join(missing)}"] if missing else [])
        parts.append(f"{method}: {'; '.join(notes) or 'all targets'}")
    return _claim(f"targeted {pct} beats random {pct} on every target", _all(verdicts),
                  "; ".join(parts) or f"no targeted rows for {model} at {pct}")


def _claim_decoys(at: Means, targets: Sequence[str]) -> dict:
    verdicts, parts = [], []
    for target in targets:
        less, bm25 = _mean(at, target, "less", "decoy_share"), _mean(at, target, "bm25", "decoy_share")
        verdicts.append(None if less is None or bm25 is None else less < bm25)
        parts.append(f"{target}: " + ("not measured" if verdicts[-1] is None
                                      else f"less {less:.3f} vs bm25 {bm25:.3f}"))
    return _claim("LESS picks fewer decoys than BM25", _all(verdicts), "; ".join(parts) or "no rows")


def _claim_harmful(at: Means, targets: Sequence[str]) -> dict:
    verdicts, parts = [], []
    for target in targets:
        harmful, family, rate = (_mean(at, target, "less", metric)
                                 for metric in ("in_family_harmful_share", "in_family_share", "family_harmful_rate"))
        if harmful is None or not family or rate is None:  # no in-family row selected: no rate to compare
            verdicts.append(None)
            parts.append(f"{target}: not measured")
        else:
            verdicts.append(harmful / family < rate)
            parts.append(f"{target}: {harmful / family:.3f} of LESS's in-family rows are harmful vs {rate:.3f} "
                         "in the family")
    return _claim("LESS selects fewer harmful rows than their rate in the target's family", _all(verdicts),
                  "; ".join(parts) or "no rows")


def _claim_full(at: Means, full: Means, targets: Sequence[str]) -> dict:
    need = math.ceil(2 * len(targets) / 3)
    reached, unknown, parts = 0, 0, []
    for target in targets:
        less, whole = _mean(at, target, "less", "test_loss"), _mean(full, target, "full", "test_loss")
        unknown += less is None or whole is None
        reached += less is not None and whole is not None and less <= whole
        parts.append(f"{target}: " + ("not measured" if less is None or whole is None
                                      else f"less {less:.4f} vs full {whole:.4f}"))
    # decided once enough targets reach it, or too few are left unmeasured to get there
    holds = None if not targets else True if reached >= need else False if reached + unknown < need else None
    return _claim(f"LESS reaches the full pool's test loss on at least {need} of {len(targets)} targets", holds,
                  "; ".join(parts + [f"reached on {reached}, {need} needed"]))


def transfer_table(agg: Sequence[Mapping], selector_model: str, target_model: str, *,
                   budget: float | None = None) -> list[dict]:
    """Per (target, method, budget) of a targeted method measured under both models, how its gain transfers.

    The selection is made with the selector's model family and fine-tunes either model. Out: ``selector_loss``,
    ``target_loss``, each model's improvement over its random baseline (random loss − method loss; None when the
    baseline is missing) and ``transfer_gap`` = selector improvement − target improvement. ``budget``: only that
    budget (None: every budget).
    """
    if selector_model == target_model:
        raise ValueError(f"selector and target model are both {selector_model!r}: pass two different models")
    index = {_key(r): r for r in agg}
    out = []
    for model, share, target, method in sorted(index, key=lambda k: (k[2], k[3], k[1])):
        if model != selector_model or baseline_of(method) is None or budget not in (None, share):
            continue
        if (target_model, share, target, method) not in index:
            continue
        row: dict = {"target": target, "method": method, "budget": share, "selector_model": selector_model,
                     "target_model": target_model}
        for role, name in (("selector", selector_model), ("target", target_model)):
            own = index[name, share, target, method]["test_loss_mean"]
            random = index.get((name, share, target, baseline_of(method)), {}).get("test_loss_mean")
            row[f"{role}_loss"] = own
            row[f"{role}_improvement"] = None if random is None else random - own
        gains = row["selector_improvement"], row["target_improvement"]
        row["transfer_gap"] = None if None in gains else gains[0] - gains[1]
        out.append(row)
    return out


def _most_common(values: Sequence) -> object:
    """The most frequent value; ties go to the smallest."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def _stat(row: Mapping, metric: str, digits: int) -> str:
    mean = row.get(f"{metric}_mean")
    return "" if mean is None else f"{mean:.{digits}f} ± {row[f'{metric}_std']:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> str:
    """A pipe table; columns after the first ``text_columns`` are right-aligned numbers."""
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def render_markdown(agg: Sequence[Mapping], claims: Sequence[Mapping], transfer: Sequence[Mapping],
                    figures: Mapping[str, str], title: str, intro: str, *, model: str | None = None) -> str:
    """The report as Markdown: intro, headline claims, results, composition, compute, transfer, figures.

    The tables show ``model`` (None: the model with the most aggregated rows); ``figures`` maps a caption to an
    image path relative to the report. A section without data (composition, compute, transfer) is left out.
    """
    model = model if model is not None else str(_most_common([r["model"] for r in agg]))
    rows = sorted((r for r in agg if r["model"] == model), key=lambda r: (r["target"], r["method"], r["budget"]))
    verdict = {True: "**holds**", False: "**does not hold**", None: "not measured"}
    parts = [f"# {title}", intro.strip(), "## Headline claims",
             "\n".join(f"- {c['claim']}: {verdict[c['holds']]} ({c['evidence']})" for c in claims),
             f"## Results (fine-tuned model: `{model}`)",
             "Test loss and exact match: mean ± std over seeds; k: rows selected; `< random`: seeds whose test loss is "
             "below the random baseline's at the same budget (in2core: random_in2core).",
             _table(["target", "method", "budget", "test loss", "exact match", "k", "< random"],
                    [[*_names(r), _stat(r, "test_loss", 4), _stat(r, "exact_match", 3),
                      _number(r.get("selection_size_mean"), 0),
                      f"{r['beats_random']}/{r['n_compared']}" if "beats_random" in r else ""] for r in rows], 3)]
    if composed := [r for r in rows if "in_family_share_mean" in r]:
        parts += ["## Composition of the selections",
                  "Shares of the selected rows (built-in benchmark only): the target's own family (precision), its "
                  "wrong-answer rows, other skills, lexical decoys, and harmful rows of any family.",
                  _table(["target", "method", "budget", *(label for _, label in COMPOSITION)],
                         [[*_names(r), *(_stat(r, m, 3) for m, _ in COMPOSITION)] for r in composed], 3)]
    if timed := [r for r in rows if "selection_seconds_mean" in r or "finetune_seconds_mean" in r]:
        parts += ["## Compute", "Wall time in seconds, mean over targets and seeds (blank: unknown).",
                  _table(["method", "budget", "selection (s)", "fine-tune (s)"], _compute_rows(timed), 2)]
    if transfer:
        parts += _transfer_section(transfer)
    if figures:
        parts += ["## Figures", *(f"**{caption}**\n\n![{caption}]({name})" for caption, name in figures.items())]
    return "\n\n".join(parts) + "\n"


def _names(row: Mapping) -> list[str]:
    return [row["target"], row["method"], percent(row["budget"])]


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _transfer_section(transfer: Sequence[Mapping]) -> list[str]:
    selector, other = transfer[0]["selector_model"], transfer[0]["target_model"]
    keys = ("selector_loss", "target_loss", "selector_improvement", "target_improvement", "transfer_gap")
    return [f"## Transfer: selected with `{selector}`, fine-tuning `{other}`",
            "Improvement over random = random's test loss − the method's; gap = improvement on the selector's family "
            "− improvement on the other model.",
            _table(["target", "method", "budget", f"loss {selector}", f"loss {other}", f"improvement {selector}",
                    f"improvement {other}", "gap"], [[*_names(t), *(_number(t[k], 4) for k in keys)] for t in transfer],
                   3)]


def _compute_rows(rows: Sequence[Mapping]) -> list[list[str]]:
    groups: dict[tuple[str, float], list[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"]), []).append(r)
    out = []
    for (method, budget), members in sorted(groups.items()):
        values = [[r[m] for r in members if m in r] for m in ("selection_seconds_mean", "finetune_seconds_mean")]
        out.append([method, percent(budget), *(f"{np.mean(v):.1f}" if v else "" for v in values)])
    return out


def write_report(rows: Sequence[Mapping], out_dir: str | Path, *, scores: Mapping[str, Mapping] | None = None,
                 title: str = TITLE, intro: str = INTRO, default_model: str | None = None,
                 default_budget: float | None = None, selector_model: str | None = None) -> dict[str, Path]:
    """Aggregate ``rows``, draw the figures and write ``report.md``, ``report.html`` and ``results.json``.

    ``default_model`` (None: the most common model of the rows) is the model of the tables and claims;
    ``default_budget`` (None: the most common budget of the ``less`` rows, else of all rows) the claims' budget;
    ``selector_model`` (None: the default model) the family selections are made with, compared against the most
    common other model in the transfer table. ``scores``: {method: {target: [n_pool] scores}} for the histograms.
    Returns {"markdown", "html", "results", <figure file stem>...: path}.
    """
    if not rows:
        raise ValueError("no result rows: run the comparison first, then pass its per-seed rows")
    agg = aggregate(rows)
    models = [str(r["model"]) for r in rows]
    model = default_model if default_model is not None else str(_most_common(models))
    if model not in models:
        raise ValueError(f"default model {model!r} has no rows; the rows have models {sorted(set(models))}")
    less = [float(r["budget"]) for r in rows if r["method"] == "less"] or [float(r["budget"]) for r in rows]
    budget = default_budget if default_budget is not None else float(_most_common(less))
    if budget not in {float(r["budget"]) for r in rows}:
        raise ValueError(f"default budget {budget} has no rows; pass one of the rows' budgets")
    selector = selector_model if selector_model is not None else model
    others = [m for m in models if m != selector]
    transfer = transfer_table(agg, selector, str(_most_common(others))) if others else []
    claims = headline_claims(agg, model, budget)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = figures.draw_figures(agg, transfer, scores, out_dir, model, budget)
    text = render_markdown(agg, claims, transfer, {caption: path.name for caption, path in drawn.items()}, title,
                           intro, model=model)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "results": out_dir / "results.json"}
    paths["markdown"].write_text(text)
    paths["html"].write_text(render_html(text, out_dir))
    results = {"default_model": model, "default_budget": budget, "selector_model": selector, "rows": agg,
               "claims": claims, "transfer": transfer}
    paths["results"].write_text(json.dumps(results, indent=2) + "\n")
    return {**paths, **{path.stem: path for path in drawn.values()}}
