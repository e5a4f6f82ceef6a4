"""Stage ``coverage``: how much helpful influence the pool offers each test row, against the test loss of the
target model fine-tuned on the In2Core coreset (reports/coverage: table, summary, plots)."""

from __future__ import annotations

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import coverage_report


@flow(name="coverage", description="In2Core coverage of every test point by the pool, with plots.")
@summarised
def coverage(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return coverage_report(params)


if __name__ == "__main__":
    cli(coverage)
