"""Stage ``warmup``: LESS warmup LoRA training of the selector, one checkpoint per epoch."""

from prefect import flow

from flows.common import cli, load, summarised
from tasks.stages import warmup_train


@flow(name="warmup", description="LoRA warmup of the selector model on a random slice of the pool.")
@summarised
def warmup(params_path: str = "params.yaml") -> dict:
    return warmup_train(load(params_path))


if __name__ == "__main__":
    cli(warmup)
