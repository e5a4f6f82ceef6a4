"""Stage ``distill``: propagate the landmarks' exact influence to every pool row and select (Influence
Distillation, first order), into the same selection files as every method."""

from __future__ import annotations

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import distill_select


@flow(name="distill", description="Influence Distillation: kernel ridge propagation from landmarks, top-k selection.")
@summarised
def distill(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return distill_select(params)


if __name__ == "__main__":
    cli(distill)
