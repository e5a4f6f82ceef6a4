"""Device and precision settings (``features.device``, ``select.device``, ``features.precision``) as torch objects."""

from __future__ import annotations

import torch

from inflow.errors import InflowError


def resolve_device(device: str, key: str = "features.device") -> torch.device:
    """A device setting (``key``) as a torch device: ``auto`` is cuda when a GPU is visible, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InflowError(f"{key} is {device!r} but torch sees no GPU (torch {torch.__version__}, "
                          f"CUDA build: {torch.version.cuda}); set {key}: cpu or auto")
    return torch.device(device)


def wants_gpu(device: str) -> bool:
    """Whether a device setting runs on a GPU here (``cuda``, ``cuda:N``, or ``auto`` with a GPU visible), without
    checking that the GPU exists (:func:`resolve_device` does)."""
    return device != "cpu" and (device != "auto" or torch.cuda.is_available())


def resolve_precision(precision: str, device: torch.device) -> str:
    """A precision setting as a concrete one: ``auto`` is bfloat16 on a GPU that has it, else float32."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


# Rows every matrix product whose rows must not depend on their neighbours is padded to (with zeros): MKL computes
# products of 1 or 2 rows with other kernels than larger ones (measured: a row gets the same bits in any product of
# 4 rows or more, not in one of 1 or 2), so a row alone in its batch or sketch group would get other bits.
MIN_PRODUCT_ROWS = 8


def pad_rows(x: torch.Tensor, rows: int = MIN_PRODUCT_ROWS) -> torch.Tensor:
    """``x [n, k]`` with zero rows appended up to ``rows`` (``x`` itself when it has as many)."""
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])])


CPU_BATCH_TOKENS = 1024  # per batch; a CPU runs one batch per core at once, so this is per core


def default_batch_tokens(config: object, device: torch.device, free_bytes: int | None = None,
                         resident_bytes: int = 0, checkpointing: bool = False) -> int:
    """A token budget per gradient batch for a model of this ``config`` (a transformers config) on ``device``.

    CPU: :data:`CPU_BATCH_TOKENS`. GPU: 60% of the memory left (``free_bytes``; default: the device's total memory
    less ``resident_bytes``, the model's weights: a function of the GPU model and the job, not of what other
    processes or cached models hold at the moment, because a GPU store records its token budget and must resume
    under the same one)
    over an estimate of the bytes a token holds through a per-example gradient pass, ``64 * layers * hidden``
    (the activations the backward keeps, with room for the backward's transients: ``benchmarks/activations.py``
    counts 34 bytes per token, layer and hidden unit at Llama-2-7B's shape under bfloat16) plus
    ``8 * vocab`` (float32 logits and their gradient at answer positions), rounded down to a multiple of 256,
    at least 256. With activation checkpointing (``checkpointing``) a layer keeps only its input until the
    backward (4 bytes per hidden unit; ``benchmarks/activations.py`` counts exactly that at 7B) and one layer at a
    time holds its whole activations, recomputed: ``8 * layers * hidden + 64 * hidden`` (the same 2x margin), so
    about 5.5 times the tokens at Llama-2-7B's shape. An estimate: set ``features.batch_tokens`` when a batch runs
    out of memory (lower) or the GPU idles (higher); ``benchmarks/extract.py --defaults`` shows what these defaults
    reach.
    """
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    if free_bytes is None:
        free_bytes = torch.cuda.get_device_properties(device).total_memory - resident_bytes
    layers = int(getattr(config, "num_hidden_layers", 1))
    hidden = int(getattr(config, "hidden_size", 1))
    vocab = int(getattr(config, "vocab_size", 0))
    kept = (8 * layers + 64) * hidden if checkpointing else 64 * layers * hidden
    per_token = kept + 8 * vocab
    return max(256, int(0.6 * free_bytes / per_token) // 256 * 256)


CPU_GROUP_MIB = 256  # unprojected features per sketch call on a CPU (rows of a 1B model's LoRA gradient: ~40)


def default_group_mib(device: torch.device, total_bytes: int | None = None) -> int:
    """MiB of unprojected features per sketch call (``features.sketch_group_mib: 0``) on ``device``.

    CPU: :data:`CPU_GROUP_MIB`. GPU: 1/64 of its total memory (``total_bytes``; default: the device's), at least
    as much: the fused sketch computes whole tiles of 64 rows, and a 7B model's LoRA gradient (8.4M floats, 34 MB
    a row) fills only 8 rows in 256 MiB, where an H200's 1/64 (2.2 GB) holds 64. A function of the GPU model, so
    the same on a resume (GPU stores record it).
    """
    if device.type != "cuda":
        return CPU_GROUP_MIB
    if total_bytes is None:
        total_bytes = torch.cuda.get_device_properties(device).total_memory
    return max(CPU_GROUP_MIB, total_bytes // 64 >> 20)


def autocast_dtype(precision: str, device: torch.device, key: str = "features.precision") -> torch.dtype | None:
    """The autocast dtype for a precision setting (``key``; None: float32, no autocast) on ``device``."""
    precision = resolve_precision(precision, device)
    if precision == "float32":
        return None
    if precision == "float16" and device.type != "cuda":
        raise InflowError(f"{key} float16 needs a GPU, but this runs on {device}; set {key}: bfloat16 or "
                          "float32, or run on a cuda device")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``'s type; disabled (float32) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what it keeps resident on its device)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
