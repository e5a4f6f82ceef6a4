"""Operations flow ``seeds``: the whole pipeline once per seed, then the mean ± std table of docs/results.md.

Each seed runs in its own DVC workspace ``<workdir>/seed-<n>/`` (a copy of the project's code, dvc.yaml and
params.yaml with the seeds of :func:`inflow.report.seeds.seed_overrides`), with ``dvc repro``: a second
``make results`` reruns only what changed. Not a DVC stage itself: it drives the DAG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import load
from inflow.config import params_to_dict
from inflow.report.seeds import aggregate_summaries, apply_overrides, format_markdown, seed_overrides

PROJECT_FILES = ("src", "flows", "tasks", "dvc.yaml", ".dvcignore")


def _sync_workspace(root: Path, workspace: Path, params: dict) -> None:
    """Copy the project's code into ``workspace`` (keeping its DVC cache and outputs) and write its params."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src, dst = root / name, workspace / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (workspace / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=workspace, check=True)
    if not (workspace / ".dvc").exists():
        _run([sys.executable, "-m", "dvc", "init", "-q"], workspace)
        _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], workspace)


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREFECT_HOME": str(cwd / ".prefect")}
    result = subprocess.run(cmd, cwd=cwd, env=env)  # output streams through: dvc's progress is the progress
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed in {cwd} (exit {result.returncode}); its output is above. "
                           f"Fix the cause and rerun: finished stages of that seed are kept")


@task(name="run-seed", cache_policy=NO_CACHE)
def run_seed(root: str, workdir: str, params: dict, seed: int) -> dict:
    workspace = (Path(workdir) / f"seed-{seed}").resolve()
    _sync_workspace(Path(root), workspace, apply_overrides(params, seed_overrides(seed)))
    get_run_logger().info("seed %d: dvc repro in %s", seed, workspace)
    _run([sys.executable, "-m", "dvc", "repro"], workspace)
    return json.loads((workspace / "reports" / "summary.json").read_text())


@flow(name="seeds", description="The whole pipeline for several seeds; mean ± std table.")
def seeds(params_path: str = "params.yaml", seeds: list[int] = (0, 1, 2), out: str = "docs/results.md",
          workdir: str = ".seeds") -> list[dict]:
    params = params_to_dict(load(params_path))
    summaries = [run_seed(str(Path.cwd()), workdir, params, s) for s in seeds]
    rows = aggregate_summaries(summaries)
    table = format_markdown(rows, len(seeds))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(_results_page(table, list(seeds), params_path))
    get_run_logger().info("results over seeds %s\n%s", list(seeds), table)
    return rows


def _results_page(table: str, seed_list: list[int], params_path: str) -> str:
    return (
        "# Results\n\n"
        f"The built-in benchmark, `{params_path}` as committed, seeds {seed_list} (each seed changes the benchmark, "
        "the model inits, the warmup slice, the random baseline, Influence Distillation's tangents and landmarks "
        "and the fine-tuning order: "
        "`inflow.report.seeds.seed_overrides`). Mean ± sample std over seeds of each target task's held-out test "
        "split; `< random` counts the seeds a targeted method beats random at its own budget (`random_in2core` "
        "for In2Core's 50%). Produced by `make results` (`python -m flows.server -- python -m flows.seeds "
        "--seeds 0 1 2 --out docs/results.md`).\n\n"
        f"{table}\n"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.seeds", description=seeds.description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--workdir", default=".seeds")
    args = parser.parse_args()
    seeds(params_path=args.params, seeds=args.seeds, out=args.out, workdir=args.workdir)
