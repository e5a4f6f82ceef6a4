"""Where every stage writes: the one artifact vocabulary shared by the core, flows and dvc.yaml.

All paths are relative to the project root (the directory holding dvc.yaml); stages run from there.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARK = Path("data/benchmark")
TOKENIZER = Path("models/tokenizer")
BASE_MODELS = Path("models/base")
WARMUP = Path("data/warmup")
GRADS = Path("data/grads")
EMBED = Path("data/embed")  # Influence Distillation's JVP embeddings (stage embed)
DISTILL = Path("data/distill")  # its landmarks and their exact gradients (stage landmarks)
IN2CORE = Path("data/in2core")  # In2Core's pool-trained model and gradient stores (stage in2core_grads)
SELECTIONS = Path("data/selections")
FINETUNED = Path("models/finetuned")
METRICS = Path("metrics")
REPORTS = Path("reports")

POOL_SPLIT = "pool"
WARMUP_MANIFEST = "warmup.json"  # written last by the warmup stage into its run directory


def base_model_dir(role: str) -> Path:
    """The base stage's output for ``role`` ("selector" or "target")."""
    return BASE_MODELS / role


def grads_split_dir(split: str) -> Path:
    """The features stage's output for one split: ``pool`` or ``targets``."""
    return GRADS / split


def store_path(split: str, checkpoint: str, task: str | None = None) -> Path:
    """``data/grads/pool/<checkpoint>.zarr`` or ``data/grads/targets/<task>/<checkpoint>.zarr``."""
    if task is None:
        return GRADS / split / f"{checkpoint}.zarr"
    return GRADS / split / task / f"{checkpoint}.zarr"


def embed_store_path(split: str, task: str | None = None) -> Path:
    """``data/embed/pool/pool.zarr`` or ``data/embed/targets/<task>.zarr``."""
    return EMBED / split / f"{task or split}.zarr"


def selection_dir(method: str) -> Path:
    return SELECTIONS / method


def finetuned_dir(method: str, target: str) -> Path:
    return FINETUNED / method / target


def metrics_path(method: str) -> Path:
    return METRICS / f"{method}.json"
