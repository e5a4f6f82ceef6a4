"""Stage ``report``: reports/summary.json (target x method), its table and plot."""

import json

from prefect import flow, get_run_logger

from flows.common import cli, load, summarised
from inflow import paths
from inflow.data.pool import load_pool
from inflow.report.plots import plot_summary
from inflow.report.summary import format_table, summarize
from inflow.selection.outputs import METHODS


@flow(name="report", description="Summarise every method's test metrics into reports/summary.json.")
@summarised
def report(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    methods = [m for m in METHODS if paths.metrics_path(m).exists()]
    summary = summarize(methods, paths.METRICS, paths.SELECTIONS, load_pool(params.data.pool))
    rows = summary["rows"]
    paths.REPORTS.mkdir(parents=True, exist_ok=True)
    (paths.REPORTS / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_summary(rows, paths.REPORTS / "summary.png")
    get_run_logger().info("summary\n%s", format_table(rows))
    return summary


if __name__ == "__main__":
    cli(report)
