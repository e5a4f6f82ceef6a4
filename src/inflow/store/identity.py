"""Content hashes of what goes into a gradient store: a checkpoint's adapter weights and optimizer state.

A store is identified by what went in, never by a folder name: two warmup runs with other learning rates or
seeds write ``checkpoint-<step>`` directories of the same names, and only the bytes inside tell them apart.
:func:`checkpoint_digests` hashes every file of the adapter (weights and config) and of the optimizer state in
full (blake2b, streamed: about 1 GB/s, so a 7B model's rank-128 LoRA optimizer state costs a second or two);
results are cached per process by (path, size, mtime), so the workers of one stage hash each file once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from inflow.errors import CheckpointError
from inflow.training.checkpoint import ADAPTER_CONFIG, OPTIMIZER_BIN, OPTIMIZER_PT

ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin")  # peft's save_pretrained
OPTIMIZER_FILES = (OPTIMIZER_PT, OPTIMIZER_BIN)
_BLOCK = 1 << 22
_CACHE: dict[tuple[str, int, int], str] = {}
_CACHE_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str:
    """blake2b-128 (hex) of a file's bytes, cached per process by (resolved path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    value = digest.hexdigest()
    with _CACHE_LOCK:
        _CACHE[key] = value
    return value


def files_digest(paths: Sequence[Path]) -> str:
    """One hash over several files: each file's name and :func:`file_digest`, in the given order."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        digest.update(path.name.encode())
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def checkpoint_digests(ckpt_dir: str | os.PathLike[str], optimizer: bool) -> tuple[str, str]:
    """``(adapter_hash, optimizer_hash)`` of a HF Trainer checkpoint directory (``optimizer_hash`` is ``""``
    unless ``optimizer``: SGD features never read the optimizer state)."""
    ckpt = Path(ckpt_dir)
    adapter = [ckpt / name for name in ADAPTER_FILES if (ckpt / name).is_file()]
    if not any(p.name != ADAPTER_CONFIG for p in adapter):
        raise CheckpointError(f"{ckpt}: no adapter weights ({' or '.join(ADAPTER_FILES[1:])}); point "
                              "features.checkpoints at HF Trainer checkpoint directories of a LoRA run")
    if not optimizer:
        return files_digest(adapter), ""
    states = [ckpt / name for name in OPTIMIZER_FILES if (ckpt / name).is_file()]
    if not states:
        raise CheckpointError(f"{ckpt}: no optimizer state ({' or '.join(OPTIMIZER_FILES)}); Adam features need "
                              "the checkpoint's AdamW moments: save checkpoints with their optimizer state")
    return files_digest(adapter), files_digest(states)
