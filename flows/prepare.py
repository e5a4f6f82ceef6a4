"""Stage ``prepare``: generate the built-in benchmark (pool, corpus, target tasks)."""

from prefect import flow

from flows.common import cli, load, summarised
from tasks.stages import prepare_benchmark


@flow(name="prepare", description="Generate the seeded synthetic benchmark into data/benchmark.")
@summarised
def prepare(params_path: str = "params.yaml") -> dict:
    return prepare_benchmark(load(params_path))


if __name__ == "__main__":
    cli(prepare)
