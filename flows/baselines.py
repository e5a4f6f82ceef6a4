"""Stage ``baselines``: random (same size as the targeted methods, and at In2Core's budget) and full-pool
selections."""

from prefect import flow

from flows.common import cli, load, summarised
from tasks.stages import baseline_select


@flow(name="baselines", description="Random and full-pool baseline selections.")
@summarised
def baselines(params_path: str = "params.yaml") -> dict:
    return baseline_select(load(params_path))


if __name__ == "__main__":
    cli(baselines)
