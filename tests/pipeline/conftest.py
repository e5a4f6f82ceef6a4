"""A tiny project on disk, built once per session by the real pipeline steps: benchmark pool, BPE tokenizer,
a 2-layer Llama selector (not pretrained) and one LoRA warmup checkpoint with its AdamW state, laid out where
the stages put them (``data/benchmark``, ``models/base/selector``, ``data/warmup``), so flows can run in it too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from inflow import paths
from inflow.config import (
    BenchmarkConfig,
    DataConfig,
    DistillConfig,
    FeaturesConfig,
    ModelConfig,
    Params,
    SketchConfig,
    TokenizerConfig,
    WarmupConfig,
    params_to_dict,
)
from inflow.data.pool import load_pool, write_pool_jsonl
from inflow.pipeline.embed import EmbedJob, plan_embed_jobs
from inflow.pipeline.features import FeatureJob, plan_jobs
from inflow.pipeline.models import build_base_model
from inflow.pipeline.prepare import build_tokenizer, prepare_benchmark, read_corpus
from inflow.pipeline.train import run_warmup
from inflow.store import GradientStore

PARAMS = dataclasses.replace(
    Params(),
    benchmark=BenchmarkConfig(pool_size=50, val_per_subtask=1, test_per_subtask=1, corpus_size=10),
    data=DataConfig(max_seq_len=256),
    tokenizer=TokenizerConfig(vocab_size=320),
    selector=ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pretrain_epochs=0),
    warmup=WarmupConfig(epochs=1, fraction=0.2, batch_size=4),
    sketch=SketchConfig(dim=64),
    features=FeaturesConfig(batch_size=2, chunk_rows=4, dtype="float16"),
    distill=DistillConfig(embed_blocks=2, embed_dim=48, landmarks=12),
)


@dataclass(frozen=True)
class TinyProject:
    root: Path
    params: Params

    @property
    def pool(self) -> Path:
        return self.root / self.params.data.pool

    def job(self, store: str | Path, *, pool: str | Path | None = None, split: str = "pool", task: int = 0,
            **features: object) -> FeatureJob:
        """The project's job for ``split`` (target task number ``task``) with absolute paths, writing ``store``;
        ``features`` override FeaturesConfig fields (chunk_rows=...)."""
        cfg = dataclasses.replace(self.params.features, **features)  # type: ignore[arg-type]
        data = DataConfig(pool=str(pool or self.pool), targets=str(self.root / self.params.data.targets),
                          max_seq_len=self.params.data.max_seq_len)
        jobs = plan_jobs(cfg, self.params.sketch, data, split, self.root / paths.WARMUP,
                         self.root / paths.base_model_dir("selector"))
        return dataclasses.replace(jobs[task], store=str(store))

    def embed_job(self, store: str | Path, *, pool: str | Path | None = None, split: str = "pool", task: int = 0,
                  **distill: object) -> EmbedJob:
        """The project's embedding job for ``split`` with absolute paths, writing ``store``; ``distill`` override
        DistillConfig fields (embed_dim=...)."""
        cfg = dataclasses.replace(self.params.distill, **distill)  # type: ignore[arg-type]
        data = DataConfig(pool=str(pool or self.pool), targets=str(self.root / self.params.data.targets),
                          max_seq_len=self.params.data.max_seq_len)
        jobs = plan_embed_jobs(cfg, self.params.features, self.params.sketch, data, split,
                               self.root / paths.base_model_dir("selector"))
        return dataclasses.replace(jobs[task], store=str(store))

    def write_pool(self, path: Path, rows: slice) -> Path:
        """The pool's rows ``rows`` as a pool file at ``path``."""
        write_pool_jsonl(load_pool(self.pool)[rows], path)
        return path

    def copy(self, dest: Path) -> TinyProject:
        """A copy of the project (to run flows in, which write under the project root)."""
        shutil.copytree(self.root, dest)
        return TinyProject(dest, self.params)

    @staticmethod
    def store_arrays(path: str | Path) -> dict[str, np.ndarray]:
        """The arrays of a complete store exactly as stored (features in the store dtype, not float32 views)."""
        store = GradientStore.open(path)
        assert store.is_complete(), f"{path} has pending chunks {store.pending_chunks()}"
        group = zarr.open_group(str(path), mode="r")
        return {name: np.asarray(group[name][:]) for name in ("features", "norms", "example_id", "row_hash",
                                                                "checksum")}

    def kill_then_resume(self, command: list[str], store: Path, reference: str | Path) -> None:
        """Run ``command`` (a one-store extraction), SIGKILL it once 3 chunks of ``store`` are done, run it again,
        and check the resumed store: only the pending chunks were written, and it is bit-identical to ``reference``
        (the same job run uninterrupted)."""
        n_chunks = GradientStore.open(reference).n_chunks
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while self.done_count(store) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the extraction finished before it could be killed"
        pending = GradientStore.open(store, writable=True).pending_chunks()
        assert 0 < len(pending) <= n_chunks - 3, pending
        rerun = subprocess.run(command, capture_output=True, text=True, check=True)
        resumed = GradientStore.open(store)
        assert json.loads(rerun.stdout.strip().splitlines()[-1])["rows_written"] == sum(
            b - a for a, b in map(resumed.chunk_bounds, pending))
        self.assert_bit_identical(self.store_arrays(store), self.store_arrays(reference))
        assert resumed.attrs == GradientStore.open(reference).attrs

    @staticmethod
    def done_count(store: str | Path) -> int:
        """Chunks of ``store`` marked done so far (0 before it exists or while its done array is mid-write)."""
        try:
            return int(np.count_nonzero(zarr.open_array(str(Path(store) / "done"), mode="r")[:]))
        except Exception:  # noqa: BLE001 (not created yet, or caught mid-write: either way nothing is done yet)
            return 0

    @staticmethod
    def assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
        """Same dtype, shape and bytes for every array of :meth:`store_arrays`."""
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
            if a[name].dtype == object:
                assert a[name].tolist() == b[name].tolist(), name
            else:
                assert a[name].tobytes() == b[name].tobytes(), name

    def write_params(self, **features: object) -> Path:
        """``params.yaml`` at the project root, with ``features`` overriding FeaturesConfig fields."""
        params = dataclasses.replace(self.params, features=dataclasses.replace(self.params.features, **features))
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(params_to_dict(params)))
        return path


def build_project(root: Path, params: Params) -> TinyProject:
    """Run prepare, tokenizer, base (no pretraining) and warmup into ``root``."""
    bench = root / paths.BENCHMARK
    prepare_benchmark(params.benchmark, bench)
    data = DataConfig(pool=str(root / params.data.pool), targets=str(root / params.data.targets),
                      max_seq_len=params.data.max_seq_len, corpus=str(root / params.data.corpus))
    build_tokenizer(params.tokenizer, data, root / paths.TOKENIZER)
    base = root / paths.base_model_dir("selector")
    build_base_model(params.selector, root / paths.TOKENIZER, read_corpus(data.corpus), base, params.data.max_seq_len)
    run_warmup(params.warmup, data, base, root / paths.WARMUP)
    return TinyProject(root, params)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    return build_project(tmp_path_factory.mktemp("tiny_project"), PARAMS)

