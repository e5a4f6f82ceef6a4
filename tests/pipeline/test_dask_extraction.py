"""The features flow on a real Dask cluster (two worker processes writing disjoint chunks of one store) gives
the same bytes as one process; ``features.dask_address`` picks the task runner."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from inflow.config import FeaturesConfig
from inflow.errors import InflowError

ROOT = Path(__file__).resolve().parents[2]


def test_dask_address_picks_the_task_runner() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.features import feature_task_runner

    threads = feature_task_runner(FeaturesConfig(workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3  # noqa: SLF001
    local = feature_task_runner(FeaturesConfig(dask_address="local", workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    kwargs = local.cluster_kwargs
    assert (kwargs["n_workers"], kwargs["processes"], kwargs["threads_per_worker"]) == (3, True, 1)
    assert str(ROOT) in kwargs["env"]["PYTHONPATH"].split(os.pathsep)  # workers import `tasks`
    remote = feature_task_runner(FeaturesConfig(dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    # several local processes would each load the model onto the one GPU, with batches sized for all of it
    with pytest.raises(InflowError, match="one Dask worker per GPU"):
        feature_task_runner(FeaturesConfig(dask_address="local", workers=2, device="cuda"))
    one = feature_task_runner(FeaturesConfig(dask_address="local", workers=1, device="cuda"))
    assert (one.cluster_kwargs["n_workers"], one.cluster_kwargs["threads_per_worker"]) == (1, 2)  # writes overlap


@pytest.mark.slow
@pytest.mark.integration
def test_features_flow_on_a_dask_cluster_matches_one_process(tiny_project, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             prefect_api: None) -> None:
    from distributed import Client, LocalCluster

    from flows.features import features
    from inflow import paths
    from inflow.pipeline.features import extract_store, plan_jobs
    from inflow.store import GradientStore

    project = tiny_project.copy(tmp_path / "project")
    monkeypatch.chdir(project.root)  # stages (and so the workers) run in the project root: paths are relative
    # what `PYTHONPATH=<repo> dask worker tcp://...` does on a real cluster: the workers can import `tasks`
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"PYTHONPATH": str(ROOT)}) as cluster, Client(cluster) as client:
        project.write_params(dask_address=cluster.scheduler_address, chunk_rows=2)
        summary = features(params_path="params.yaml", split="pool")

        def contexts() -> int:  # runs on each worker: how many jobs it extracted chunks of
            from inflow.pipeline import stores as step
            return len(step._CONTEXTS)  # noqa: SLF001

        busy = client.run(contexts)
    assert len(busy) == 2 and all(busy.values()), f"both workers should have extracted chunks: {busy}"

    params = project.write_params(chunk_rows=2)
    from inflow.config import load_params

    loaded = load_params(params)
    job = plan_jobs(loaded.features, loaded.sketch, loaded.data, "pool", paths.WARMUP,
                    paths.base_model_dir("selector"))[0]
    assert summary == [{"checkpoint": job.checkpoint, "split": "pool", "task": None, "store": job.store,
                        "rows_written": GradientStore.open(job.store).attrs.n_rows}]
    reference = dataclasses.replace(job, store="reference.zarr")
    extract_store(reference, progress=False)
    assert GradientStore.open(job.store).attrs == GradientStore.open(reference.store).attrs
    project.assert_bit_identical(project.store_arrays(job.store), project.store_arrays(reference.store))
