"""Prefect tasks of the features stage: open a store, extract one chunk (the unit of fan-out)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from inflow.pipeline.features import StoreJob, extract_chunk, job_summary, open_store


@task(name="open-store", cache_policy=NO_CACHE)
def open_feature_store(job: StoreJob) -> list[int]:
    """Create, reopen, grow (or, if its settings changed, rebuild) the job's store; the pending chunks. Call it
    directly (not ``.submit``) so it runs in the flow's process, before any worker writes to the store."""
    pending = open_store(job, rebuild=True)
    get_run_logger().info("%s: %d chunks to extract", job.store, len(pending))
    return pending


@task(name="extract-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def extract_feature_chunk(job: StoreJob, chunk: int) -> int:
    """Fill one chunk of an opened store (on whichever thread or Dask worker the task runner picks)."""
    rows = extract_chunk(job, chunk)
    get_run_logger().debug("%s chunk %d: %d rows (%s)", job.store, chunk, rows, job_summary(job))
    return rows
