"""What the ``features`` step does, as data: :class:`FeatureJob` (one store to fill) and the plan of a stage's jobs.

A job names its inputs by path and holds every setting its store's bytes depend on, so any process (a thread, a
Dask worker on another node, ``python -m inflow.pipeline.features --job job.json``) can run it. The checkpoints
come from ``features.warmup_dir`` (the warmup stage's run or another, e.g. LESS's own), their base model from
``features.base_model``, the warmup stage, or the checkpoints' ``adapter_config.json`` (:func:`checkpoints_for`).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from inflow.config import DataConfig, FeaturesConfig, SketchConfig
from inflow.data.targets import target_sources
from inflow.errors import CheckpointError
from inflow.paths import POOL_SPLIT, WARMUP_MANIFEST, store_path
from inflow.training.checkpoint import ADAPTER_CONFIG, find_checkpoints

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureJob:
    """One store to fill: the rows of ``split`` (``pool``, or target task ``task``) at ``checkpoint``.

    Paths are used as given (relative ones against the working directory of whichever process runs the job).
    """

    checkpoint: str  # HF Trainer checkpoint directory
    base_model: str  # the model the adapter was trained on
    split: str  # "pool" or "targets"
    task: str | None  # target task name for split "targets"
    store: str  # store path
    pool: str  # pool file (split "pool")
    targets: str  # target tasks root (split "targets")
    max_seq_len: int
    batch_size: int
    chunk_rows: int
    dtype: str
    eps_inside_sqrt: bool
    sketch_kind: str
    sketch_dim: int
    sketch_seed: int
    threads: int = 0  # CPU threads (gradient batches run one per thread); 0: every core the process is given
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    precision: str = "float32"  # autocast dtype of the forward/backward (float32: no autocast; auto: per device)
    batch_tokens: int = 0  # padded tokens per gradient batch; 0: the device's default
    gradient_checkpointing: bool = False  # recompute decoder layers in the backward (less memory, the same bytes)
    compile: bool = False  # torch.compile the decoder layers (fused elementwise passes; recorded in the store)
    sketch_group_mib: int = 0  # MiB of features gathered per sketch call (within a chunk); 0: the device's default
    targets_format: str = "jsonl"  # data.targets_format
    label_newline: bool = True  # data.label_newline (pool rows)
    # only these rows of the split, in this order: a JSON list of example ids (Influence Distillation's landmarks)
    rows: str = ""
    kind: str = ""  # the feature kind; '' is LESS's: adam for the pool, sgd for targets (see FEATURE_KINDS)
    # a target task's name: store H_t Γ(z), target task t's loss Hessian (its validation rows) times each row's
    # feature, instead of Γ(z) (Influence Distillation's second order)
    hvp_task: str = ""
    # split "targets": the task's validation rows ("val", what selection matches) or its test rows ("test",
    # In2Core's coverage of each test point)
    target_rows: str = "val"
    # only these LoRA layer blocks (In2Core's reduced layers: first:K, last:K, or a JSON list of block indices),
    # each projected to its share of sketch_dim in an all-layer store; '' every block. Plain-gradient stores only
    layers: str = ""

    def context(self):  # noqa: ANN201 (a FeatureContext; imported here lazily: features imports this module)
        """The extraction context of this job (model, rows, sketch), see :mod:`inflow.pipeline.features`."""
        from inflow.pipeline.features import FeatureContext

        return FeatureContext(self)

    @property
    def feature_kind(self) -> str:
        if self.kind:
            return self.kind
        return "adam" if self.split == POOL_SPLIT else "sgd"

    def to_json(self) -> str:
        """The job as a JSON object (for ``python -m inflow.pipeline.features --job``)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureJob:
        """The inverse of :meth:`to_json`; ``ValueError`` naming missing or unknown keys."""
        return job_from_json(cls, text, "a feature job")


def job_from_json(cls: type[T], text: str, what: str) -> T:
    """Dataclass ``cls`` from a JSON object; ``ValueError`` naming the keys ``what`` needs when some are missing
    or unknown (optional fields may be left out)."""
    data = json.loads(text)
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    if not isinstance(data, dict) or set(data) - names or required - set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{what} needs the keys {sorted(names)}, got {keys}")
    return cls(**data)


def checkpoints_for(cfg: FeaturesConfig, warmup_dir: str | Path, default_base: str | Path) -> tuple[list[Path], str]:
    """The checkpoints to extract at and their base model.

    Checkpoints: ``features.checkpoints`` (names, or paths, relative to ``warmup_dir``), else every
    ``checkpoint-<step>`` of ``warmup_dir``. Base model: ``features.base_model``; else ``default_base`` (the
    selector) when ``warmup_dir`` is a run of our warmup stage (it holds ``warmup.json``); else the
    ``base_model_name_or_path`` of the checkpoints' ``adapter_config.json`` (what peft writes, LESS's included).
    """
    run = Path(warmup_dir)
    checkpoints = [run / c for c in cfg.checkpoints] if cfg.checkpoints else find_checkpoints(run)
    missing = [str(c) for c in checkpoints if not c.is_dir()]
    if missing:
        raise CheckpointError(f"features.checkpoints: no checkpoint directory at {missing}; name "
                              f"checkpoint-<step> directories of features.warmup_dir ({run})")
    if cfg.base_model:
        return checkpoints, cfg.base_model
    if (run / WARMUP_MANIFEST).is_file():
        return checkpoints, str(default_base)
    return checkpoints, _adapter_base_model(checkpoints[0])


def _adapter_base_model(checkpoint: Path) -> str:
    config = checkpoint / ADAPTER_CONFIG
    base = json.loads(config.read_text()).get("base_model_name_or_path") if config.is_file() else None
    if not base:
        raise CheckpointError(f"features.base_model is not set, and {config} names no base_model_name_or_path: "
                              "set features.base_model to the model the checkpoints were trained from")
    return str(base)


def plan_jobs(cfg: FeaturesConfig, sketch: SketchConfig, data: DataConfig, split: str, warmup_dir: str | Path,
              default_base: str | Path) -> list[FeatureJob]:
    """Every (checkpoint, task) store of ``split``."""
    checkpoints, base = checkpoints_for(cfg, warmup_dir, default_base)
    tasks: list[str | None] = [None]
    if split != POOL_SPLIT:
        tasks = [source.name for source in target_sources(data.targets, data.targets_format)]
    return [
        FeatureJob(checkpoint=str(ckpt), base_model=str(base), split=split, task=task,
                   store=str(store_path(split, ckpt.name, task)), pool=data.pool, targets=data.targets,
                   max_seq_len=data.max_seq_len, batch_size=cfg.batch_size, chunk_rows=cfg.chunk_rows,
                   dtype=cfg.dtype, eps_inside_sqrt=cfg.adam_eps_inside_sqrt, sketch_kind=sketch.kind,
                   sketch_dim=sketch.dim, sketch_seed=sketch.seed, threads=cfg.threads,
                   batch_tokens=cfg.batch_tokens, gradient_checkpointing=cfg.gradient_checkpointing,
                   compile=cfg.compile,
                   sketch_group_mib=cfg.sketch_group_mib,
                   device=cfg.device, precision=cfg.precision, targets_format=data.targets_format,
                   label_newline=data.label_newline)
        for ckpt in checkpoints for task in tasks
    ]


def job_summary(job) -> dict:
    """A JSON-able description of a job for logs and manifests."""
    return {k: v for k, v in asdict(job).items() if k in ("checkpoint", "split", "task", "store")}
