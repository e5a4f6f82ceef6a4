"""Stage ``bm25``: the BM25 baseline, each pool row's text scored against every target task's validation rows."""

from prefect import flow

from flows.common import cli, load, summarised
from inflow.data.targets import validate_targets
from tasks.stages import bm25_select


@flow(name="bm25", description="BM25 selection: each pool row's text against every target task's validation rows.")
@summarised
def bm25(params_path: str = "params.yaml") -> dict:
    params = load(params_path)
    validate_targets(params.data)
    return bm25_select(params)


if __name__ == "__main__":
    cli(bm25)
