"""Operations flow ``compare``: every method × target task × seed × budget (and LESS's other subtask rule, and the
LESS-T transfer check), each selection fine-tuned and evaluated, then the comparison report.

Each seed runs in its own DVC workspace ``<workdir>/seed-<n>/`` (the project's code, dvc.yaml and params.yaml with
the seeds of :func:`inflow.report.seeds.seed_overrides`). Within it, every run (a budget, a variant) writes its
params and calls ``dvc repro``: stages whose inputs did not change are skipped, and a stage whose inputs were seen
before is restored from DVC's run cache, so the second budget reuses the first's gradient stores and a second
``compare`` with the same settings computes nothing (``runs.json`` lists the stages each run executed). Rows of
every run go to ``<out>/runs.json``; :func:`inflow.report.document.write_report` turns them into
``<out>/report.md``, ``report.html``, ``results.json`` and the figures. Not a DVC stage itself: it drives the DAG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import TIMINGS, load
from inflow import paths
from inflow.config import params_to_dict
from inflow.data.pool import load_pool
from inflow.report.seeds import apply_overrides, seed_overrides
from inflow.report.summary import build_summary
from inflow.selection.outputs import METHODS

PROJECT_FILES = ("src", "flows", "tasks", "dvc.yaml", ".dvcignore")
BUDGETED = ("less", "distill", "bm25", "rds", "random")  # their budget is select.fraction
RULED = ("less", "bm25", "rds")  # they share rows between subtasks by select.subtask_rule
# the stages whose wall time is a method's selection cost (shared ones, e.g. warmup, count for every method)
SELECTION_STAGES = {
    "less": ("warmup", "features@pool", "features@targets", "less"),
    "distill": ("warmup", "features@targets", "embed@pool", "embed@targets", "landmarks", "distill"),
    "in2core": ("warmup", "in2core_grads", "in2core"),
    "bm25": ("bm25",), "rds": ("rds",), "random": ("baselines",), "random_in2core": ("baselines",),
    "full": ("baselines",),
}
RAN = re.compile(r"Running stage '([^']+)'")


@dataclass(frozen=True)
class Variant:
    """A run besides the default: params overrides, the methods whose rows it contributes (renamed with
    ``suffix``), and the target model label of its rows (None: the default target model's)."""

    name: str
    overrides: dict = field(default_factory=dict)
    methods: tuple[str, ...] = METHODS
    suffix: str = ""
    model: str | None = None


def variants(params: dict, names: list[str]) -> list[Variant]:
    """The variants ``names`` asks for: ``default``; ``max`` (LESS's paper rule, ``select.subtask_rule: max``, for
    the methods that use it); ``transfer`` (LESS-T: the target model of the selector's family, same size, fine-tuned
    on the cached selections: the transfer gap)."""
    known = {
        "default": Variant("default"),
        "max": Variant("max", {"select.subtask_rule": "max"}, RULED, "_max"),
        "transfer": Variant("transfer", {"target.family": params["selector"]["family"]}, BUDGETED,
                            model=params["selector"]["family"]),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(known)}")
    return [known[n] for n in names]


def _sync_workspace(root: Path, workspace: Path) -> None:
    """Copy the project's code into ``workspace`` (keeping its DVC cache and outputs); git and DVC set up once."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src, dst = root / name, workspace / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst)
    if not (workspace / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=workspace, check=True)
    if not (workspace / ".dvc").exists():
        _run([sys.executable, "-m", "dvc", "init", "-q"], workspace)
        _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], workspace)


def _run(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` in ``cwd``, its output streamed through (dvc's progress is the progress) and returned."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREFECT_HOME": str(cwd / ".prefect")}
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:  # type: ignore[union-attr]
        sys.stdout.write(line)
        lines.append(line)
    if process.wait() != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed in {cwd} (exit {process.returncode}); its output is above. "
                           f"Fix the cause and rerun: finished stages are kept")
    return "".join(lines)


def _seconds(workspace: Path, stages: tuple[str, ...]) -> float | None:
    """Summed wall time of ``stages`` from ``timings/`` (None if one was never timed)."""
    total = 0.0
    for stage in stages:
        path = workspace / TIMINGS / f"{stage}.json"
        if not path.exists():
            return None
        total += json.loads(path.read_text())["seconds"]
    return total


def collect_rows(workspace: Path, params: dict, variant: Variant, seed: int, first_budget: bool) -> list[dict]:
    """The result rows of the run just finished in ``workspace`` (see ``inflow.report.document`` for the schema)."""
    budget = params["select"]["fraction"]
    methods = [m for m in variant.methods if (workspace / paths.metrics_path(m)).exists()
               and (first_budget or m in BUDGETED)]
    pool = load_pool(workspace / params["data"]["pool"])
    rows = []
    for row in build_summary(methods, workspace / paths.METRICS, workspace / paths.SELECTIONS, pool):
        method = row["method"]
        rows.append({**row, "method": method + (variant.suffix if method in RULED else ""), "seed": seed,
                     "model": variant.model or params["target"]["family"], "variant": variant.name,
                     "budget": budget if method in BUDGETED else row["selection_size"] / row["pool_size"],
                     "selection_seconds": _seconds(workspace, SELECTION_STAGES[method]),
                     "finetune_seconds": _seconds(workspace, (f"finetune@{method}",))})
    return rows


def method_scores(workspace: Path) -> dict[str, dict[str, np.ndarray]]:
    """{method: {target: its task score over the pool}} from each targeted method's ``scores.parquet``."""
    out = {}
    for method in METHODS:
        path = workspace / paths.selection_dir(method) / "scores.parquet"
        if path.exists():
            table = pl.read_parquet(path)
            columns = [c for c in table.columns if re.fullmatch(r"(score|influence)_[^/]+", c) and "__" not in c]
            out[method] = {c.split("_", 1)[1]: table[c].to_numpy() for c in columns}
    return out


@task(name="run-seed", cache_policy=NO_CACHE)
def run_seed(root: str, workdir: str, params: dict, seed: int, budgets: list[float],
             variant_names: list[str]) -> tuple[list[dict], list[dict]]:
    """Every (budget, variant) run of one seed: (result rows, [{seed, budget, variant, ran}])."""
    workspace = (Path(workdir) / f"seed-{seed}").resolve()
    _sync_workspace(Path(root), workspace)
    seeded = apply_overrides(params, seed_overrides(seed))
    rows, runs = [], []
    for i, budget in enumerate(budgets):
        for variant in variants(params, variant_names):
            if variant.model and i > 0:
                continue  # the transfer check runs at the first budget only
            run_params = apply_overrides(seeded, {"select.fraction": budget, **variant.overrides})
            (workspace / "params.yaml").write_text(yaml.safe_dump(run_params, sort_keys=False))
            targets = [] if not variant.model else [f"evaluate@{m}" for m in variant.methods]
            get_run_logger().info("seed %d, budget %s, %s: dvc repro %s", seed, budget, variant.name,
                                  " ".join(targets))
            output = _run([sys.executable, "-m", "dvc", "repro", *targets], workspace)
            runs.append({"seed": seed, "budget": budget, "variant": variant.name, "ran": RAN.findall(output)})
            rows += collect_rows(workspace, run_params, variant, seed, first_budget=i == 0)
    return rows, runs


@flow(name="compare", description="Every method x target x seed x budget, fine-tuned and evaluated; the report.")
def compare(params_path: str = "params.yaml", seeds: list[int] = (0, 1, 2), budgets: list[float] | None = None,
            variants_: list[str] = ("default", "max", "transfer"), workdir: str = ".seeds",
            out: str = "reports/compare") -> dict:
    from inflow.report.document import write_report  # matplotlib: only once the runs are done

    params = params_to_dict(load(params_path))
    budgets = list(budgets or [params["select"]["fraction"]])
    rows, runs = [], []
    for seed in seeds:
        seed_rows, seed_runs = run_seed(str(Path.cwd()), workdir, params, seed, budgets, list(variants_))
        rows += seed_rows
        runs += seed_runs
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "runs.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))
    first = Path(workdir).resolve() / f"seed-{seeds[0]}"
    written = write_report(rows, out_dir, scores=method_scores(first), title="inflow: method comparison",
                           intro=_intro(list(seeds), budgets, list(variants_), params_path),
                           default_model=params["target"]["family"], default_budget=budgets[0],
                           selector_model=params["selector"]["family"])
    get_run_logger().info("report: %s", {k: str(v) for k, v in written.items()})
    return {"runs": runs, "report": {k: str(v) for k, v in written.items()}}


def _intro(seed_list: list[int], budgets: list[float], variant_names: list[str], params_path: str) -> str:
    return (f"The pipeline of `{params_path}` for seeds {seed_list} (each seed changes the benchmark, the model "
            "inits, the warmup slice, the random baseline, Influence Distillation's tangents and landmarks and the "
            f"fine-tuning order), budgets {[f'{b:.0%}' for b in budgets]} of the pool, variants {variant_names}. "
            "Mean ± sample std over seeds of each target task's held-out test split. A method's selection time "
            "sums its stages' wall times (`timings/`; stages shared by several methods, such as the warmup, count "
            "for each). Produced by `make results` (`python -m flows.server -- python -m flows.compare`).")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=compare.description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=None,
                        help="shares of the pool (default: select.fraction); the sweep: 0.01 0.05 0.1 0.25 0.5")
    parser.add_argument("--variants", nargs="+", default=["default", "max", "transfer"],
                        help="default, max (LESS's subtask rule of the paper), transfer (LESS-T gap)")
    parser.add_argument("--workdir", default=".seeds")
    parser.add_argument("--out", default="reports/compare")
    args = parser.parse_args()
    compare(params_path=args.params, seeds=args.seeds, budgets=args.budgets, variants_=args.variants,
            workdir=args.workdir, out=args.out)
