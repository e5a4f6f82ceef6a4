"""A persisted, growing gradient store under DVC with linked cache types (the project's ``cache.type`` is
``reflink,hardlink,symlink``): one copy on disk at rest, and growing it, in ``dvc repro`` or by hand, never
corrupts the DVC cache.

The stage's script (written below into a fresh repository) is what a persisted stage does: it creates or grows a
real :class:`~inflow.store.GradientStore` to params.yaml's ``rows`` and then draws landmarks from it with the
landmarks stage's own writer (:func:`inflow.pipeline.distill.write_landmarks`), which rewrites ``landmarks.json``
beside the store. The store's files are all Zarr's (written by temporary file + rename); ``landmarks.json`` is
ours: had it been written with a plain ``write_text``, growing the store by hand would write through the link
into the cache object, and the hash checks below would fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inflow.store import GradientStore
from tests.integration.dvcrepo import dvc, write_params

pytestmark = pytest.mark.integration

STORE = "data/store"  # the persisted output: pool.zarr + landmarks.json
ROWS = (600, 900, 1200)  # first version (dvc repro), grown by dvc repro, grown by hand

SCRIPT = '''\
"""Create or grow data/store/pool.zarr to params.yaml's rows, then draw its landmarks (landmarks.json)."""
import json
import os
from pathlib import Path

import numpy as np
import yaml

from inflow.config import DistillConfig
from inflow.pipeline.distill import write_landmarks
from inflow.sketch import BlockSketch
from inflow.store import GradientStore, RowManifest, StoreAttrs, row_hash

OUT, DIM, CHUNK = Path("data/store"), 128, 256


def disk() -> dict:
    """Bytes of data/store and .dvc/cache, each inode once (what the disk holds now)."""
    seen = {}
    for root in (OUT, Path(".dvc/cache")):
        for path in root.rglob("*"):
            info = os.lstat(path)
            if not path.is_dir() or path.is_symlink():
                seen[(info.st_dev, info.st_ino)] = info.st_size
    return {"bytes": sum(seen.values())}


params = yaml.safe_load(Path("params.yaml").read_text())
before = disk()
ids = [f"ex-{i}" for i in range(params["rows"])]
rows = RowManifest.build(ids, [row_hash(i, f"text {i}".encode()) for i in ids])
attrs = StoreAttrs(model_id="models/tiny", model_hash="abc123", checkpoint="checkpoint-10", checkpoint_step=10,
                   lora_targets=("q_proj", "v_proj"), feature_kind="sgd",
                   sketch=BlockSketch("rademacher", 0, [96, 64], DIM).to_attrs(), dim=DIM, dtype="float32",
                   n_rows=len(rows), chunk_rows=CHUNK, data_hash=rows.digest(), code_version="test")
OUT.mkdir(parents=True, exist_ok=True)
store = GradientStore.create_or_open(OUT / "pool.zarr", attrs, rows)
for chunk in store.pending_chunks():
    wanted = store.rows(chunk)
    features = np.stack([np.random.default_rng(int(h) % 2**32).normal(size=DIM) for h in wanted.hashes])
    store.write_chunk(chunk, features, wanted.ids)
write_landmarks(DistillConfig(landmarks=params["landmarks"], landmark_rule="random", seed=0), OUT / "pool.zarr",
                OUT / "landmarks.json")
if os.environ.get("DISK_LOG"):
    with open(os.environ["DISK_LOG"], "a") as log:
        log.write(json.dumps({"rows": len(rows), "start": before, "end": disk()}) + "\\n")
'''

DVC_YAML = {"stages": {"grow": {"cmd": "python grow.py", "deps": ["grow.py"], "params": ["rows", "landmarks"],
                                "outs": [{STORE: {"persist": True}}]}}}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cache_objects(repo: Path) -> list[Path]:
    """The DVC 3 local cache's objects: ``.dvc/cache/files/md5/<2 hex>/<30 hex>[.dir]``."""
    return sorted(p for p in (repo / ".dvc/cache/files/md5").rglob("*") if p.is_file())


def assert_cache_intact(repo: Path) -> None:
    """Every cache object still holds the bytes it is named after (``.dir`` listings included)."""
    bad = [str(p) for p in cache_objects(repo)
           if md5(p) != p.parent.name + p.name.removesuffix(".dir")]
    assert not bad, f"cache objects whose bytes changed (written through a link?): {bad}"


def entries(root: Path) -> list[Path]:
    """Every file (or symlink) under ``root``, no directories."""
    return sorted(p for p in root.rglob("*") if p.is_symlink() or not p.is_dir())


def disk_bytes(*roots: Path) -> int:
    """Apparent bytes under ``roots``, each inode once (``os.lstat``: a symlink counts its own few bytes)."""
    seen = {}
    for root in roots:
        for path in entries(root):
            info = os.lstat(path)
            seen[(info.st_dev, info.st_ino)] = info.st_size
    return sum(seen.values())


def assert_linked(repo: Path, kind: str) -> dict[str, int]:
    """Every workspace file of the store is a ``kind`` link to its cache object, so the store is on disk once;
    returns the byte counts."""
    cache = repo / ".dvc/cache"
    cached = {(os.lstat(p).st_dev, os.lstat(p).st_ino): p for p in cache_objects(repo)}
    files = entries(repo / STORE)
    assert files and any(p.name == "landmarks.json" for p in files)
    for path in files:
        info = os.lstat(path)
        if kind == "hardlink":
            assert not path.is_symlink() and (info.st_dev, info.st_ino) in cached, f"{path} is not a hardlink"
            obj = cached[(info.st_dev, info.st_ino)]
        else:
            assert path.is_symlink(), f"{path} is not a symlink"
            obj = path.resolve()
            assert obj.is_relative_to(cache.resolve() / "files" / "md5"), f"{path} -> {obj}"
        assert md5(obj) == obj.parent.name + obj.name
    content = sum(p.stat().st_size for p in files)  # the store's bytes (through the links)
    together, alone = disk_bytes(repo / STORE, cache), disk_bytes(cache)
    links = together - alone  # what the workspace adds: nothing (hardlinks) or the symlinks' own bytes
    assert links == 0 if kind == "hardlink" else links <= 256 * len(files)
    return {"store": content, "cache": alone, "workspace+cache": together}


def status(repo: Path) -> dict:
    return json.loads(dvc(repo, "status", "--json").strip().splitlines()[-1])


def read_store(repo: Path) -> tuple[list[str], np.ndarray]:
    store = GradientStore.open(repo / STORE / "pool.zarr")
    return store.example_ids(), store.read_all(raw=True)  # verifies every chunk's checksum


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_growing_persisted_store_is_stored_once_and_never_corrupts_the_cache(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, log = tmp_path / "repo", tmp_path / "disk.jsonl"
    monkeypatch.setenv("DISK_LOG", str(log))
    repo.mkdir()
    (repo / "grow.py").write_text(SCRIPT)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    write_params(repo, {"rows": ROWS[0], "landmarks": 5})
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "cache.type", kind)

    # a. the first version: the store at rest is links into the cache, one copy on disk
    dvc(repo, "repro")
    first = assert_linked(repo, kind)
    assert status(repo) == {}
    assert_cache_intact(repo)
    first_ids, first_rows = read_store(repo)
    assert len(first_ids) == ROWS[0]
    first_landmarks = (repo / STORE / "landmarks.json").read_bytes()
    saved = tmp_path / "v1"
    saved.mkdir()
    for name in ("dvc.lock", "params.yaml"):
        shutil.copy(repo / name, saved / name)

    # b. grown by dvc repro (DVC unprotects the persisted output first): one copy at rest again, cache intact
    write_params(repo, {"rows": ROWS[1], "landmarks": 5})
    dvc(repo, "repro")
    second = assert_linked(repo, kind)
    assert status(repo) == {}
    assert_cache_intact(repo)
    ids, _ = read_store(repo)
    assert len(ids) == ROWS[1] and ids[:ROWS[0]] == first_ids
    assert (repo / STORE / "landmarks.json").read_bytes() != first_landmarks  # the sidecar was rewritten
    # ... and rolling back (a teammate checking out an older commit) gives the first version's rows back
    for name in ("dvc.lock", "params.yaml"):
        shutil.copy(saved / name, repo / name)
    dvc(repo, "checkout")
    assert status(repo) == {}
    ids, rows = read_store(repo)
    assert ids == first_ids and np.array_equal(rows, first_rows)
    assert (repo / STORE / "landmarks.json").read_bytes() == first_landmarks
    assert_linked(repo, kind)

    # c. grown in place by hand (no dvc, so nothing is unprotected: the files are links into the cache)
    write_params(repo, {"rows": ROWS[2], "landmarks": 5})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "grow.py"], cwd=repo, env=env, check=True)
    assert_cache_intact(repo)  # zarr's and our writes replaced the links; no cache object was written through
    ids, _ = read_store(repo)
    assert len(ids) == ROWS[2] and ids[:ROWS[0]] == first_ids
    assert (repo / STORE / "landmarks.json").read_bytes() != first_landmarks
    changed = status(repo)
    assert "grow" in changed, changed
    dvc(repo, "commit", "-f")
    assert status(repo) == {}
    third = assert_linked(repo, kind)
    assert_cache_intact(repo)
    ids, rows = read_store(repo)
    assert len(ids) == ROWS[2] and np.array_equal(rows[:ROWS[0]], first_rows)

    # during a dvc repro of a persisted output the store exists twice (DVC's unprotect copies every linked file
    # before the command runs); by hand it does not
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["rows"] for r in runs] == list(ROWS)
    grown_by_dvc, grown_by_hand = runs[1], runs[2]
    assert grown_by_dvc["start"]["bytes"] >= first["cache"] + first["store"]  # the transient copy
    assert grown_by_hand["start"]["bytes"] <= second["workspace+cache"] + 256 * len(entries(repo / STORE))
    print(f"\n[{kind}] at rest: v1 {first}, v2 {second}, v3 {third}; inside the stage runs: "
          + "; ".join(f"{r['rows']} rows: start {r['start']['bytes']} end {r['end']['bytes']}" for r in runs))
