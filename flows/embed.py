"""Stage ``embed``: Influence Distillation's JVP embeddings of one split (the pool, or every target task's
validation rows), fanned out over store chunks exactly like the features stage (same subflow and task runner)."""

from __future__ import annotations

from prefect import flow

from flows.common import cli, load, summarised
from flows.features import extract_stores, feature_task_runner
from inflow import paths
from inflow.data.targets import validate_targets
from inflow.pipeline.embed import plan_embed_jobs
from inflow.pipeline.stores import remove_stale_stores


@flow(name="embed", description="JVP embeddings of every row (Influence Distillation) into chunked Zarr stores.")
@summarised
def embed(params_path: str = "params.yaml", split: str = "pool") -> list[dict]:
    params = load(params_path)
    validate_targets(params.data)
    base = params.features.base_model or paths.base_model_dir("selector")
    jobs = plan_embed_jobs(params.distill, params.features, params.sketch, params.data, split, base)
    remove_stale_stores(paths.EMBED / split, jobs)  # the stage keeps its stores (persist) to resume and grow
    runner = feature_task_runner(params.features)
    return extract_stores.with_options(task_runner=runner)(jobs=jobs)


if __name__ == "__main__":
    cli(embed, split={"choices": ["pool", "targets"], "required": True})
