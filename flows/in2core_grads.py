"""Stage ``in2core_grads``: the model In2Core takes gradients from (``in2core.model: pool`` trains a LoRA of the
selector on the whole pool; ``warmup`` uses a warmup checkpoint), then plain gradients of every pool row and of
every target task's validation and test rows (the features subflow, on the features stage's task runner)."""

from __future__ import annotations

from prefect import flow

from flows.common import cli, load, summarised
from flows.features import extract_stores, feature_task_runner
from inflow import paths
from inflow.data.targets import validate_targets
from inflow.pipeline.in2core import in2core_jobs
from tasks.stages import in2core_train


@flow(name="in2core_grads", description="In2Core: the pool-trained (or warmup) model's per-example gradients of "
                                        "the pool and of the target tasks' validation and test rows.")
@summarised
def in2core_grads(params_path: str = "params.yaml") -> list[dict]:
    params = load(params_path)
    validate_targets(params.data)
    in2core_train(params)
    jobs = in2core_jobs(params.in2core, params.features, params.sketch, params.data, paths.base_model_dir("selector"))
    return extract_stores.with_options(task_runner=feature_task_runner(params.features))(jobs=jobs)


if __name__ == "__main__":
    cli(in2core_grads)
