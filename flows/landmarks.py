"""Stage ``landmarks``: draw Influence Distillation's landmark rows from the pool's embeddings, then extract their
exact gradient features at one warmup checkpoint and, for the second order, the target Hessian applied to them
(the features subflow, on the features stage's task runner)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import cli, load, summarised
from flows.features import extract_stores, feature_task_runner
from inflow import paths
from inflow.pipeline.distill import LANDMARKS_FILE, landmark_stores, write_landmarks
from inflow.pipeline.distill_second import write_drift


@flow(name="landmarks", description="Landmark rows (random or k-means++ in embedding space), their exact "
                                    "Adam-preconditioned (or plain) gradient features and target Hessian products.")
@summarised
def landmarks(params_path: str = "params.yaml") -> list[dict]:
    params = load(params_path)
    drawn = write_landmarks(params.distill, paths.embed_store_path(paths.POOL_SPLIT), LANDMARKS_FILE)
    get_run_logger().info("landmarks: %s", drawn)
    features, second = landmark_stores(params.distill, params.features, params.sketch, params.data,
                                       params.features.warmup_dir, paths.base_model_dir("selector"))
    written = extract_stores.with_options(task_runner=feature_task_runner(params.features))(jobs=features + second)
    for job in second:
        write_drift(job)
    return written


if __name__ == "__main__":
    cli(landmarks)
