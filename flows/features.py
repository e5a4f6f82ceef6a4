"""Stage ``features``: gradient features of one split at every checkpoint, fanned out over store chunks.

The stage flow plans the stores and hands them to the ``features-extract`` subflow, whose task runner follows
``features.dask_address``: '' runs chunks in threads of this process, 'local' starts a Dask LocalCluster of
``features.workers`` processes, anything else connects to a running Dask scheduler. The subflow opens (creates,
grows) every store here, in the parent, then maps chunk extraction over the workers: each writes disjoint chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm.auto import tqdm

import tasks
from flows.common import cli, load, summarised
from inflow import paths
from inflow.config import FeaturesConfig
from inflow.data.targets import validate_targets
from inflow.devices import wants_gpu
from inflow.errors import InflowError
from inflow.parallel import CORES_ENV, available_cores
from inflow.pipeline.features import job_summary, plan_jobs, remove_stale_stores
from inflow.store import GradientStore
from tasks.features import extract_feature_chunk, open_feature_store


def feature_task_runner(cfg: FeaturesConfig) -> TaskRunner:
    """The task runner ``features.dask_address`` asks for (see the module docstring)."""
    if not cfg.dask_address:
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import (
        DaskTaskRunner,  # only where Dask is asked for: it is slow to import
    )

    if cfg.dask_address != "local":
        return DaskTaskRunner(address=cfg.dask_address)
    if cfg.workers > 1 and wants_gpu(cfg.device):
        raise InflowError(f"features.dask_address: local starts {cfg.workers} worker processes here, and each would "
                          "load the model onto the same GPU with batches sized for all of its memory; set "
                          "features.workers: 1, or dask_address: '' (chunk threads take turns on the GPU), or run "
                          "one Dask worker per GPU (CUDA_VISIBLE_DEVICES) and give features.dask_address the "
                          "scheduler's address")
    # worker processes import `tasks` (the repo root, not an installed package) and `inflow`
    root = str(Path(tasks.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    share = str(max(1, available_cores() // cfg.workers))  # each process's share of the cores (threads: 0)
    # on a GPU (one process): two chunk threads, so one writes its chunk while the other's gradients hold the GPU
    threads = 2 if wants_gpu(cfg.device) else 1
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cfg.workers, "processes": True, "threads_per_worker": threads,
                                          "env": {"PYTHONPATH": pythonpath, CORES_ENV: share}})


@flow(name="features-extract", description="Open every store here, then extract their chunks on the task runner.")
def extract_stores(jobs: list) -> list[dict]:  # FeatureJob or EmbedJob (any StoreJob)
    pending = {job: open_feature_store(job) for job in jobs}  # in this process, before any worker writes
    mapped = [(job, chunk) for job in jobs for chunk in pending[job]]
    futures = extract_feature_chunk.map(job=[j for j, _ in mapped], chunk=[c for _, c in mapped])
    written = {job: 0 for job in jobs}
    bar = tqdm(zip(mapped, futures), total=len(mapped), desc="features", unit="chunk", mininterval=2.0)
    for (job, _chunk), future in bar:
        written[job] += future.result()
    for job in jobs:
        if not GradientStore.open(job.store).is_complete():
            raise RuntimeError(f"{job.store}: chunks still pending after extraction; rerun the stage to resume")
    return [{**job_summary(job), "rows_written": written[job]} for job in jobs]


@flow(name="features", description="Per-example LoRA gradient features into chunked Zarr stores.")
@summarised
def features(params_path: str = "params.yaml", split: str = "pool") -> list[dict]:
    params = load(params_path)
    validate_targets(params.data)  # every target task's splits, before the first expensive stage extracts anything
    jobs = plan_jobs(params.features, params.sketch, params.data, split, params.features.warmup_dir,
                     paths.base_model_dir("selector"))
    remove_stale_stores(paths.grads_split_dir(split), jobs)  # the stage keeps its stores (persist) to resume
    runner = feature_task_runner(params.features)
    return extract_stores.with_options(task_runner=runner)(jobs=jobs)


if __name__ == "__main__":
    cli(features, split={"choices": ["pool", "targets"], "required": True})
