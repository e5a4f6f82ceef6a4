"""Stage ``tokenizer``: train the demo models' BPE tokenizer on the benchmark text."""

from prefect import flow

from flows.common import cli, load, summarised
from tasks.stages import build_tokenizer


@flow(name="tokenizer", description="Train the demo tokenizer into models/tokenizer.")
@summarised
def tokenizer(params_path: str = "params.yaml") -> dict:
    return build_tokenizer(load(params_path))


if __name__ == "__main__":
    cli(tokenizer)
