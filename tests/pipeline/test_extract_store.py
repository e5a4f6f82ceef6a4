"""The features step on a real tiny model: a SIGKILLed extraction resumes bit-identically; a grown pool extracts
only its new rows and gives the same store (and LESS selection) as a from-scratch run; stale data is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from inflow.data.pool import load_pool, write_pool_jsonl
from inflow.data.targets import load_target_tasks
from inflow.errors import StoreMismatchError
from inflow.methods.less import checkpoint_weights, less_scores, subtask_means
from inflow.pipeline.features import (
    FeatureContext,
    FeatureJob,
    extract_chunk,
    extract_store,
    main,
    open_store,
)
from inflow.selection import top_k
from inflow.store import GradientStore


def test_job_json_round_trip(tmp_path: Path) -> None:
    job = FeatureJob(checkpoint="c", base_model="b", split="targets", task="qa", store="s.zarr", pool="p",
                     targets="t", max_seq_len=8, batch_size=2, chunk_rows=4, dtype="float16", eps_inside_sqrt=True,
                     sketch_kind="rademacher", sketch_dim=8, sketch_seed=0, threads=2)
    assert FeatureJob.from_json(job.to_json()) == job
    data = json.loads(job.to_json())
    del data["threads"]
    assert FeatureJob.from_json(json.dumps(data)).threads == 0  # optional, like its default (every core)
    with pytest.raises(ValueError, match="a feature job needs the keys"):
        FeatureJob.from_json(json.dumps({**data, "colour": "red"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "colour": "red"}))
    assert main(["--job", str(bad), "--no-progress"]) == 1  # a clear message on stderr, no traceback



@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(tiny_project, tmp_path: Path) -> None:
    killed = tmp_path / "killed.zarr"
    job = tiny_project.job(killed, chunk_rows=2, batch_size=1)
    job_file = tmp_path / "job.json"
    job_file.write_text(job.to_json())
    command = [sys.executable, "-m", "inflow.pipeline.features", "--job", str(job_file), "--no-progress"]
    reference = tiny_project.job(tmp_path / "reference.zarr", chunk_rows=2, batch_size=1)
    extract_store(reference, progress=False)
    n_chunks = GradientStore.open(reference.store).n_chunks
    assert n_chunks >= 10

    tiny_project.kill_then_resume(command, killed, reference.store)


def _chunk_files(store: Path, name: str) -> dict[str, bytes]:
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted((store / name / "c").rglob("*")) if f.is_file()}


def _less(pool_store: str, val_store: str, val_subtasks: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    val = GradientStore.open(val_store)
    _names, means = subtask_means(val.read_all(), [val_subtasks[i] for i in val.example_ids()])
    train = GradientStore.open(pool_store)
    scores = less_scores([train], {"task": [means]}, checkpoint_weights([1.0]), progress=False)["task"]
    return scores, train.example_ids()


@pytest.mark.slow
def test_grown_pool_extracts_only_new_rows_and_equals_a_fresh_store(tiny_project, tmp_path: Path) -> None:
    full = load_pool(tiny_project.pool)
    pool_file = tmp_path / "pool.jsonl"
    write_pool_jsonl(full[:23], pool_file)  # the pool grows in place, as a user would append to it
    job = tiny_project.job(tmp_path / "grown.zarr", pool=pool_file, chunk_rows=3)
    extract_store(job, progress=False)
    small = GradientStore.open(job.store)
    n_old, chunk = small.attrs.n_rows, small.attrs.chunk_rows
    assert n_old % chunk, "the small pool should end in a partial chunk"
    before = {name: _chunk_files(Path(job.store), name) for name in ("features", "norms", "example_id")}
    old_rows = small.read_all()

    write_pool_jsonl(full, pool_file)
    pending = open_store(job)
    grown = GradientStore.open(job.store)
    assert pending == list(range(n_old // chunk, grown.n_chunks))  # the partial chunk, then the new ones
    for c in pending:
        extract_chunk(job, c)
    after = {name: _chunk_files(Path(job.store), name) for name in before}
    for name, files in before.items():  # complete chunks: byte for byte the files they were
        complete = {k: v for k, v in files.items() if int(k.split("/")[2]) < n_old // chunk}
        assert complete and all(after[name][k] == v for k, v in complete.items()), name
    reopened = GradientStore.open(job.store).read_all()[:n_old]
    np.testing.assert_allclose(reopened, old_rows, atol=2e-3)  # re-extracted with new batch-mates (fp16 rows)

    scratch = tiny_project.job(tmp_path / "scratch.zarr", pool=tiny_project.pool, chunk_rows=3)
    extract_store(scratch, progress=False)
    tiny_project.assert_bit_identical(tiny_project.store_arrays(job.store), tiny_project.store_arrays(scratch.store))
    g, s = GradientStore.open(job.store), GradientStore.open(scratch.store)
    by_id = dict(zip(s.example_ids(), s.read_all()))
    assert all(np.array_equal(row, by_id[i]) for i, row in zip(g.example_ids(), g.read_all()))
    assert g.attrs == s.attrs

    val = tiny_project.job(tmp_path / "val.zarr", split="targets", task=0)
    extract_store(val, progress=False)
    task = next(t for t in load_target_tasks(val.targets) if t.name == val.task)
    subtasks = dict(zip(task.val["example_id"].to_list(), task.val["subtask"].to_list()))
    scores_g, ids_g = _less(job.store, val.store, subtasks)
    scores_s, ids_s = _less(scratch.store, val.store, subtasks)
    assert ids_g == ids_s and scores_g.tobytes() == scores_s.tobytes()
    assert top_k(ids_g, scores_g, 10).equals(top_k(ids_s, scores_s, 10))


@pytest.mark.slow
def test_edited_or_removed_pool_rows_are_refused(tiny_project, tmp_path: Path) -> None:
    full = load_pool(tiny_project.pool)
    pool_file = tmp_path / "pool.jsonl"
    write_pool_jsonl(full[:12], pool_file)
    job = tiny_project.job(tmp_path / "g.zarr", pool=pool_file)
    extract_store(job, progress=False)
    first = GradientStore.open(job.store).example_ids()[0]

    write_pool_jsonl(full[1:20], pool_file)  # first row removed
    with pytest.raises(StoreMismatchError, match="no longer in the data"):
        open_store(job)
    write_pool_jsonl(_edit_answer(full[:20], first), pool_file)
    with pytest.raises(StoreMismatchError, match=f"changed content under the same example_id.*{first}"):
        open_store(job)

    # a worker whose cached view of the data predates a growth (made by another parent) rebuilds it once ...
    write_pool_jsonl(full[:26], pool_file)
    pending = _grow_elsewhere(job)
    assert pending and all(extract_chunk(job, c) for c in pending) and GradientStore.open(job.store).is_complete()
    # ... and refuses rows whose content changed after the parent planned them
    write_pool_jsonl(full[:32], pool_file)
    pending = _grow_elsewhere(job)
    last = GradientStore.open(job.store).rows(pending[-1]).ids[-1]
    write_pool_jsonl(_edit_answer(full[:32], last), pool_file)
    with pytest.raises(StoreMismatchError, match=f"changed content .*{last}.*changed after the store was opened"):
        extract_chunk(job, pending[-1])


def _grow_elsewhere(job: FeatureJob) -> list[int]:
    """What another process's open_store does, leaving this process's cached view of the data as it was."""
    ctx = FeatureContext(job)
    return GradientStore.create_or_open(job.store, ctx.attrs, ctx.manifest).pending_chunks()


def _edit_answer(pool: pl.DataFrame, example_id: str) -> pl.DataFrame:
    """``pool`` with the answer of ``example_id`` replaced by a short one (same id, new content; short, so
    truncation at max_seq_len cannot hide the edit)."""
    rows = pool.to_dicts()
    for row in rows:
        if row["example_id"] == example_id:
            row["messages"] = [*row["messages"][:-1], {**row["messages"][-1], "content": "zz edited"}]
    return pl.DataFrame(rows, schema=pool.schema)


@pytest.mark.slow
def test_stage_rebuilds_a_store_whose_settings_changed_and_prunes_stale_ones(tiny_project, tmp_path: Path) -> None:
    import dataclasses

    from inflow.pipeline.features import remove_stale_stores

    grads = tmp_path / "grads"
    job = tiny_project.job(grads / "checkpoint-1.zarr", chunk_rows=16)
    extract_store(job, progress=False)
    reseeded = dataclasses.replace(job, sketch_seed=job.sketch_seed + 1)
    with pytest.raises(StoreMismatchError, match="seed"):
        open_store(reseeded)  # the API refuses ...
    pending = open_store(reseeded, rebuild=True)  # ... the stage rebuilds
    assert pending == list(range(GradientStore.open(job.store, writable=True).n_chunks))
    assert GradientStore.open(job.store).attrs.sketch["seed"] == job.sketch_seed + 1

    stale = grads / "checkpoint-0.zarr"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    assert remove_stale_stores(grads, [reseeded]) == [str(stale)]
    assert not stale.exists() and Path(job.store).exists()


@pytest.mark.slow
def test_chunks_that_take_turns_write_outside_their_turn(tiny_project, tmp_path: Path, monkeypatch) -> None:
    """Where chunks take turns on the compute (a GPU, compiled layers), a chunk's write (compression, checksum,
    disk) leaves the turn to the next chunk's gradients; the store is the one an extraction without turns writes."""
    import threading

    from inflow.pipeline import stores

    free_while_writing: list[bool] = []
    write = GradientStore.write_chunk

    def checked_write(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        other = threading.Thread(target=lambda: free_while_writing.append(_try_turn(stores._GPU_TURN)))
        other.start()
        other.join()
        write(self, *args, **kwargs)

    plain = tiny_project.job(tmp_path / "plain.zarr", chunk_rows=8)
    extract_store(plain, progress=False)
    monkeypatch.setattr(stores, "_takes_turns", lambda job: True)
    monkeypatch.setattr(GradientStore, "write_chunk", checked_write)
    turns = tiny_project.job(tmp_path / "turns.zarr", chunk_rows=8)
    extract_store(turns, progress=False)
    assert len(free_while_writing) == GradientStore.open(turns.store).n_chunks >= 2
    assert all(free_while_writing)
    stored = GradientStore.open(turns.store).read_all()
    np.testing.assert_array_equal(stored, GradientStore.open(plain.store).read_all())


def _try_turn(lock) -> bool:  # noqa: ANN001
    if lock.acquire(blocking=False):
        lock.release()
        return True
    return False


@pytest.mark.slow
def test_a_chunk_is_written_while_the_next_computes_and_kept_when_that_fails(tiny_project, tmp_path: Path,
                                                                             monkeypatch) -> None:
    """extract_store writes chunk i on its writer thread while chunk i + 1 computes (the write waits here until
    the next chunk has begun); when a later chunk fails, the chunks before it are written and done."""
    import threading

    from inflow.pipeline import stores

    begun = {c: threading.Event() for c in range(8)}
    overlapped: list[bool] = []
    compute, write = stores._compute_chunk, stores._write_chunk

    def computing(job, chunk):  # noqa: ANN001, ANN202
        begun[chunk].set()
        if chunk == 2:
            raise RuntimeError("chunk 2 fails")
        return compute(job, chunk)

    def writing(chunk, *rest):  # noqa: ANN001, ANN002, ANN202
        overlapped.append(begun[chunk + 1].wait(timeout=60) and threading.current_thread().name.startswith("inflow"))
        return write(chunk, *rest)

    monkeypatch.setattr(stores, "_compute_chunk", computing)
    monkeypatch.setattr(stores, "_write_chunk", writing)
    job = tiny_project.job(tmp_path / "store.zarr", chunk_rows=8)
    with pytest.raises(RuntimeError, match="chunk 2 fails"):
        extract_store(job, progress=False)
    store = GradientStore.open(job.store)
    assert overlapped == [True, True]  # chunks 0 and 1, each written while the next one had begun
    assert store.pending_chunks()[:1] == [2] and store.n_chunks > 3
