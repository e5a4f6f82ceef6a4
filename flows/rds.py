"""Stage ``rds``: the representation-similarity baseline (the selector base model's pooled hidden states)."""

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import rds_select


@flow(name="rds", description="RDS selection: cosine of the selector's hidden states with the validation rows.")
@summarised
def rds(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return rds_select(params)


if __name__ == "__main__":
    cli(rds)
