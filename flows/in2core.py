"""Stage ``in2core``: DataInf influence of every pool row on each target task on the kept layer blocks, the
proponents as the coreset (the same selection files as every method), reduced-layer agreement in in2core.json."""

from __future__ import annotations

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import in2core_select


@flow(name="in2core", description="In2Core: influence-function coresets (DataInf, reduced layers).")
@summarised
def in2core(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return in2core_select(params)


if __name__ == "__main__":
    cli(in2core)
