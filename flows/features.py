"""Stage ``features``: gradient features of one split at every checkpoint, fanned out over store chunks."""

from prefect import flow, unmapped

from flows.common import cli, load
from inflow import paths
from inflow.pipeline.features import job_summary, plan_jobs
from inflow.store import GradientStore
from tasks.features import extract_feature_chunk, open_feature_store


@flow(name="features", description="Per-example LoRA gradient features into chunked Zarr stores.")
def features(params_path: str = "params.yaml", split: str = "pool") -> list[dict]:
    params = load(params_path)
    jobs = plan_jobs(params.features, params.sketch, params.data, split, paths.WARMUP,
                     paths.base_model_dir("selector"))
    done = []
    for job in jobs:
        pending = open_feature_store(job)
        rows = extract_feature_chunk.map(job=unmapped(job), chunk=pending)
        written = sum(f.result() for f in rows)
        if not GradientStore.open(job.store).is_complete():
            raise RuntimeError(f"{job.store}: chunks still pending after extraction; rerun the stage to resume")
        done.append({**job_summary(job), "rows_written": written})
    return done


if __name__ == "__main__":
    cli(features, split={"choices": ["pool", "targets"], "required": True})
