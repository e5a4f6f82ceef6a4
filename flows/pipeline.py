"""The whole pipeline as one flow: ``dvc repro`` (only what changed recomputes), ``dvc push`` to the configured
remote, the report. ``inflow run`` runs it once; ``inflow serve --cron ...`` serves it as a scheduled deployment.

Each stage ``dvc repro`` runs is its own flow run (``python -m flows.<stage>``) on the same Prefect server; this
flow's Markdown artifact names the stages that ran and carries the report's table.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.schedules import Cron

from inflow.report.summary import format_table
from tasks.ops import dvc_push, dvc_repro, read_summary


@flow(name="pipeline", description="dvc repro (only what changed), push to the DVC remote, write the report.")
def pipeline(project: str = ".", targets: list[str] | None = None, push: bool = True, remote: str | None = None,
             quiet: bool = False) -> dict:
    root = Path(project).resolve()
    repro = dvc_repro(root, list(targets or []), quiet)
    pushed = dvc_push(root, remote) if push else None
    summary = read_summary(root)
    create_markdown_artifact(key="pipeline-run", markdown=render_run(repro, pushed, summary),
                             description=f"inflow pipeline run in {root}")
    return {**repro, "pushed_to": pushed, "report": "reports/summary.json" if summary else None}


def run_pipeline(**parameters) -> dict:
    """One pipeline run in this process; its last logs and events are sent before returning, while the server
    (which ``inflow run`` may stop right after) still answers."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        return pipeline(**parameters)
    finally:
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


def serve_pipeline(name: str, cron: str, timezone: str, **parameters) -> None:
    """Serve the pipeline as deployment ``pipeline/<name>`` on a cron schedule until interrupted; each run is
    quiet (no progress bars) and gets ``parameters``."""
    pipeline.serve(name=name, schedules=[Cron(cron, timezone=timezone)], parameters={**parameters, "quiet": True},
                   description=f"inflow pipeline of {parameters.get('project', '.')}: dvc repro, dvc push, report",
                   print_starting_message=False)


def render_run(repro: dict, pushed: str | None, summary: dict | None) -> str:
    """The pipeline run's Markdown artifact: stages ran / restored, the remote pushed to, the report table."""
    lines = ["# inflow pipeline run", "",
             f"- stages ran ({len(repro['ran'])}): {', '.join(repro['ran']) or 'none (everything up to date)'}",
             f"- restored from the run cache: {', '.join(repro['restored']) or 'none'}",
             f"- pushed to DVC remote: {pushed or 'no (no remote configured, or --no-push)'}"]
    if summary:
        lines += ["", "## Report (reports/summary.json)", "", "```", format_table(summary["rows"]), "```"]
    return "\n".join(lines) + "\n"
