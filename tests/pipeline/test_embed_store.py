"""The embed step on a real tiny model: stored rows are the sketched JVP embeddings of each row alone; a SIGKILLed
run resumes bit-identically; a grown pool embeds only its new rows; other settings are refused or rebuilt."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from inflow.data.batching import collate
from inflow.errors import StoreMismatchError
from inflow.methods.distill import embedding_positions, jvp_embeddings
from inflow.pipeline.embed import EmbedJob, main
from inflow.pipeline.feature_jobs import job_from_json
from inflow.pipeline.features import extract_chunk, extract_store, open_store
from inflow.pipeline.stores import _context
from inflow.store import GradientStore


def test_stored_rows_are_the_sketched_embeddings_of_each_row_alone(tiny_project, tmp_path: Path) -> None:
    job = tiny_project.embed_job(tmp_path / "pool.zarr")
    assert extract_store(job, progress=False) == 50
    store = GradientStore.open(job.store)
    assert store.is_complete() and store.attrs.feature_kind == "jvp" and store.attrs.dim == 48
    assert store.attrs.extraction["embed_blocks"] == 2 and store.attrs.extraction["tangents"] == 2
    assert store.attrs.sketch["blocks"][0]["projected"]  # 2 tangents x hidden 32 = 64 > 48: sketched
    ctx = _context(job)
    raw = store.read_all(raw=True)
    for i in (0, 17, 49):  # each row alone, unpadded, against its place in a length-sorted, padded batch
        batch = collate([ctx.rows[ctx.index[store.example_ids()[i]]]], ctx.pad_id)
        positions = embedding_positions(batch["labels"], batch["attention_mask"])
        alone = jvp_embeddings(ctx.model, batch["input_ids"], batch["attention_mask"], positions, ctx.tangents, 2)
        expected = ctx.sketch.project(alone.float())[0].numpy()
        np.testing.assert_allclose(raw[i], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    other = tiny_project.embed_job(tmp_path / "other.zarr", tangents=1, seed=3)
    extract_store(other, progress=False)
    assert not np.allclose(GradientStore.open(other.store).read_all()[:, :32], raw[:, :32])


def test_job_json_round_trip_and_cli_errors(tmp_path: Path) -> None:
    job = EmbedJob(base_model="b", split="pool", task=None, store="s.zarr", pool="p", targets="t", max_seq_len=8,
                   embed_blocks=2, tangents=2, seed=0, embed_dim=16, sketch_kind="rademacher", batch_size=2,
                   chunk_rows=4)
    assert job_from_json(EmbedJob, job.to_json(), "an EmbedJob") == job
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(job.to_json()), "colour": "red"}))
    assert main(["--job", str(bad), "--no-progress"]) == 1



@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(tiny_project, tmp_path: Path) -> None:
    killed = tmp_path / "killed.zarr"
    job = dataclasses.replace(tiny_project.embed_job(killed), chunk_rows=2, batch_size=1)
    job_file = tmp_path / "job.json"
    job_file.write_text(job.to_json())
    reference = dataclasses.replace(job, store=str(tmp_path / "reference.zarr"))
    extract_store(reference, progress=False)
    assert GradientStore.open(reference.store).n_chunks >= 10
    command = [sys.executable, "-m", "inflow.pipeline.embed", "--job", str(job_file), "--no-progress"]
    tiny_project.kill_then_resume(command, killed, reference.store)


@pytest.mark.slow
def test_grown_pool_embeds_only_new_rows_and_other_settings_are_refused(tiny_project, tmp_path: Path) -> None:
    pool = tiny_project.write_pool(tmp_path / "pool.jsonl", slice(0, 30))
    job = tiny_project.embed_job(tmp_path / "grown.zarr", pool=pool)
    extract_store(job, progress=False)
    tiny_project.write_pool(pool, slice(0, 41))
    pending = open_store(job)
    assert pending == [7, 8, 9, 10]  # chunk_rows 4: the partial chunk 7 (rows 28-29) and the new rows
    assert sum(extract_chunk(job, c) for c in pending) == 13
    scratch = tiny_project.embed_job(tmp_path / "scratch.zarr", pool=pool)
    extract_store(scratch, progress=False)
    tiny_project.assert_bit_identical(tiny_project.store_arrays(job.store), tiny_project.store_arrays(scratch.store))

    changed = tiny_project.embed_job(job.store, pool=pool, tangents=3)
    with pytest.raises(StoreMismatchError, match="tangents"):
        open_store(changed)
    assert open_store(changed, rebuild=True) == list(range(11))  # the stage rebuilds it

