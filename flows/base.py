"""Stage ``base``: the base checkpoint of one role (selector or target)."""

from prefect import flow

from flows.common import cli, load, summarised
from tasks.stages import build_base_model


@flow(name="base", description="Build and pretrain a tiny base model, or reference the user's checkpoint.")
@summarised
def base(params_path: str = "params.yaml", role: str = "selector") -> dict:
    return build_base_model(load(params_path), role)


if __name__ == "__main__":
    cli(base, role={"choices": ["selector", "target"], "required": True})
