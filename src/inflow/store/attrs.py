"""What a gradient store was built from: the attributes saved beside its arrays and checked on every reopen.

:class:`StoreAttrs` is frozen and JSON round-trips (``to_dict`` / ``from_dict``); :meth:`StoreAttrs.diff` lists
the differences between two of them in words, which ``GradientStore.create_or_open`` turns into a
``StoreMismatchError``. A store is identified by what went into its bytes, never by a folder or checkpoint name: the base model's
fingerprint, content hashes of the checkpoint's adapter weights and (Adam features) optimizer state, every
feature and extraction setting, and :data:`FEATURE_FORMAT`, the version of the gradient code's output. The
fields fall in three groups:

* settings (model, checkpoint and its content hashes, LoRA targets, feature kind, sketch, dim, dtype,
  chunk_rows, precision, ``extraction`` settings, ``feature_format``): any difference invalidates every stored
  row (:meth:`StoreAttrs.settings_diff`);
* rows (``n_rows``, ``data_hash``): what the store holds now. A store built with a row manifest
  (``store/rows.py``) may grow, so these are not compared as settings: the manifest is compared row by row, and
  the store rewrites them when it grows. A store built without one is fixed-size: :meth:`StoreAttrs.blocking_diff`
  compares them too;
* ``code_version``: a difference only warns (the package version says who wrote the store; whether its bytes
  are still what this code computes is ``feature_format``'s job, which is checked).

:meth:`StoreAttrs.pairing_diff` is the other check: the pool and target stores that scoring pairs must come
from the same model, checkpoint, sketch and feature format.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

# sgd: plain gradients; adam: LESS's Adam update; precond: Influence Distillation's Adam-preconditioned gradient a⊙g;
# jvp: Influence Distillation's JVP embeddings (not gradients at all, but stored, grown and checked the same way)
FEATURE_KINDS = ("sgd", "adam", "precond", "jvp")
DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")
WARN_ONLY = ("code_version",)  # differences in these fields do not invalidate a store
ROW_FIELDS = ("n_rows", "data_hash")  # what the store holds now; a store with a row manifest grows instead
# Bump whenever the features the gradient code writes for the same inputs change (per-example gradients, Adam
# transform, sketch, normalisation, encoding of rows): a store of another format is rebuilt, never reused.
# 1: stores written before the format was recorded; 2: content-hashed checkpoints, extraction settings recorded.
FEATURE_FORMAT = 2
# What a pool store and a target store scored against each other must share (see pairing_diff).
PAIRING_FIELDS = ("model_id", "model_hash", "checkpoint", "checkpoint_step", "adapter_hash", "lora_targets",
                  "sketch", "dim", "feature_format")


@dataclass(frozen=True)
class StoreAttrs:
    """The settings and inputs a gradient store's features depend on."""

    model_id: str  # the selector model (path or hub id)
    model_hash: str  # hash of its weights/config, so a retrained model at the same path is noticed
    checkpoint: str  # which warmup checkpoint the features come from (e.g. "checkpoint-105")
    checkpoint_step: int
    lora_targets: tuple[str, ...]  # LoRA target modules, in parameter order
    feature_kind: Literal["sgd", "adam", "precond", "jvp"]
    sketch: dict[str, Any] = field(hash=False)  # BlockSketch.to_attrs()
    dim: int  # width of a stored row (the sketch's out_dim)
    dtype: Literal["float16", "float32"]
    n_rows: int  # rows held now (grows when rows are appended)
    chunk_rows: int  # rows per chunk: the unit of fan-out, resume and integrity
    data_hash: str  # hash of the rows held now, in order (RowManifest.digest() for a store with a manifest)
    code_version: str  # inflow version that wrote the store (a difference only warns)
    precision: str = "float32"  # autocast dtype of the forward/backward that computed the features
    adapter_hash: str = ""  # content hash of the checkpoint's adapter weights and config
    optimizer_hash: str = ""  # content hash of the checkpoint's optimizer state ("" for SGD features)
    # every other setting the feature bytes depend on (Adam betas/eps and where eps goes, batch size, threads,
    # sketch group size, device type): recorded and checked, so a store's bytes are a function of its attrs
    extraction: dict[str, Any] = field(default_factory=dict, hash=False)
    feature_format: int = 1  # FEATURE_FORMAT of the code that wrote it (absent in old stores: 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        # canonical JSON form (lists, not tuples) so attrs compare equal after a round trip through the store
        object.__setattr__(self, "sketch", json.loads(json.dumps(self.sketch)))
        object.__setattr__(self, "extraction", json.loads(json.dumps(self.extraction)))
        if self.feature_kind not in FEATURE_KINDS:
            raise ValueError(f"feature_kind must be one of {FEATURE_KINDS}, got {self.feature_kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} (features.dtype), got {self.dtype!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} (features.precision), got {self.precision!r}")
        if self.dim < 1 or self.n_rows < 0 or self.chunk_rows < 1:
            raise ValueError(f"need dim >= 1, n_rows >= 0, chunk_rows >= 1; got {self.dim}, {self.n_rows}, "
                             f"{self.chunk_rows}")
        if "out_dim" in self.sketch and self.sketch["out_dim"] != self.dim:
            raise ValueError(f"dim {self.dim} differs from the sketch's out_dim {self.sketch['out_dim']}: "
                             "pass dim=sketch.out_dim")

    @property
    def n_chunks(self) -> int:
        """``ceil(n_rows / chunk_rows)``."""
        return -(-self.n_rows // self.chunk_rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``lora_targets`` as a list)."""
        data = dataclasses.asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreAttrs:
        """The inverse of :meth:`to_dict`; ``ValueError`` naming missing or unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"store attrs: missing keys {missing}, unknown keys {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as sorted JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StoreAttrs:
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def diff(self, other: StoreAttrs, labels: tuple[str, str] = ("here", "there")) -> list[str]:
        """Differences, one line each: ``"sketch.seed: 0 here, 1 there"`` (nested keys dotted, list items indexed).

        ``labels`` name the two sides (e.g. ``("in the store", "asked for now")``).
        """
        return _diff(self.to_dict(), other.to_dict(), "", labels)

    def blocking_diff(self, other: StoreAttrs, labels: tuple[str, str] = ("here", "there")) -> list[str]:
        """:meth:`diff` without the warn-only fields: what a fixed-size store (no row manifest) must agree on."""
        return [line for line in self.diff(other, labels) if _field(line) not in WARN_ONLY]

    def settings_diff(self, other: StoreAttrs, labels: tuple[str, str] = ("here", "there")) -> list[str]:
        """:meth:`blocking_diff` without the row fields: the settings every stored row depends on."""
        return [line for line in self.blocking_diff(other, labels) if _field(line) not in ROW_FIELDS]

    def pairing_diff(self, other: StoreAttrs, labels: tuple[str, str] = ("here", "there")) -> list[str]:
        """Differences in :data:`PAIRING_FIELDS`: what two stores scored against each other (a pool store and a
        target store at one checkpoint) must share. The feature kind, rows and extraction settings may differ."""
        return [line for line in self.diff(other, labels) if _field(line) in PAIRING_FIELDS]

    def with_rows(self, n_rows: int, data_hash: str) -> StoreAttrs:
        """A copy describing ``n_rows`` rows whose manifest digest is ``data_hash``."""
        return dataclasses.replace(self, n_rows=n_rows, data_hash=data_hash)


def _field(line: str) -> str:
    """The top-level field a :meth:`StoreAttrs.diff` line is about (``"sketch.seed: ..."`` -> ``"sketch"``)."""
    return line.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]


def _diff(mine: Any, theirs: Any, path: str, labels: tuple[str, str]) -> list[str]:
    here, there = labels
    if isinstance(mine, dict) and isinstance(theirs, dict):
        lines: list[str] = []
        for key in sorted(set(mine) | set(theirs), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in theirs:
                lines.append(f"{sub}: {_short(mine[key])} {here}, absent {there}")
            elif key not in mine:
                lines.append(f"{sub}: absent {here}, {_short(theirs[key])} {there}")
            else:
                lines.extend(_diff(mine[key], theirs[key], sub, labels))
        return lines
    if mine == theirs:
        return []
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) != len(theirs):
        return [f"{path}: {len(mine)} entries {here}, {len(theirs)} {there}"]
    if isinstance(mine, list) and isinstance(theirs, list) and all(isinstance(v, dict) for v in mine + theirs):
        return [line for i, (a, b) in enumerate(zip(mine, theirs)) for line in _diff(a, b, f"{path}[{i}]", labels)]
    return [f"{path}: {_short(mine)} {here}, {_short(theirs)} {there}"]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_pairing(pool: StoreAttrs, target: StoreAttrs, pool_path: str, target_path: str) -> None:
    """Raise :class:`~inflow.errors.StoreMismatchError` unless the pool and target stores scored against each other
    share model, checkpoint (by content), LoRA targets, sketch and feature format (:meth:`StoreAttrs.pairing_diff`).

    Scores between features of two models, checkpoints or sketches are numbers without meaning: refuse them.
    """
    from inflow.errors import StoreMismatchError  # local: attrs stays importable without the errors module cycle

    problems = pool.pairing_diff(target, (f"in the pool store {pool_path}", f"in the target store {target_path}"))
    if problems:
        raise StoreMismatchError(
            f"the pool and target gradient stores were not built alike: {'; '.join(problems)}. Rerun the features "
            "stage for both splits with the same checkpoints, model and sketch (dvc repro features), or point "
            "features.checkpoints at the checkpoints both were built from.", problems)
