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


def autocast_dtype(precision: str, device: torch.device, key: str = "features.precision") -> torch.dtype | None:
    """The autocast dtype for a precision setting (``key``; None: float32, no autocast) on ``device``."""
    if precision == "float32":
        return None
    if precision == "float16" and device.type != "cuda":
        raise InflowError(f"{key} float16 needs a GPU, but this runs on {device}; set {key}: bfloat16 or "
                          "float32, or run on a cuda device")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``'s type; disabled (float32) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
