"""Stage ``less``: LESS scores of the pool against every target task, top-k selections."""

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import less_select


@flow(name="less",
      description="LESS selection (checkpoint-weighted cosine per subtask; select.subtask_rule picks the rows).")
@summarised
def less(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return less_select(params)


if __name__ == "__main__":
    cli(less)
