"""The features stage's extraction at its defaults, built once for the benchmarks that run it (``extract.py
--defaults``, ``breakdown.py``): what :func:`inflow.pipeline.features.featurize` runs with ``features.device:
auto`` and every other features setting at its default, on a random-init Llama shape with LoRA and fake Adam
moments.

SDPA attention, ``precision: auto``, ``batch_tokens`` from :func:`inflow.devices.default_batch_tokens`, on a CPU
one batch per core at one intra-op thread (``threads: 0``), on a GPU without the padding mask (``padding_mask``
keeps it), sketch groups of :func:`inflow.devices.default_group_mib`, the model prepared for autocast as the stage
prepares it (:func:`inflow.models.autocast.autocast_only`); ``compile`` compiles its layers as ``features.compile``
does (:func:`inflow.gradients.compiling.compile_layers`, one batch at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from _common import ModelSize, synthetic_examples, tiny_lora_model
from inflow.data.batching import Encoded, bucket_width, token_batches
from inflow.devices import autocast_dtype, default_batch_tokens, default_group_mib, module_bytes
from inflow.devices import resolve_device, resolve_precision
from inflow.gradients.blocks import lora_blocks
from inflow.gradients.checkpointing import checkpoint_layers
from inflow.gradients.compiling import compile_layers
from inflow.models.autocast import autocast_only
from inflow.parallel import resolve_threads, torch_threads
from inflow.pipeline.features import causal_only_on, featurize, sketch_tf32_on
from inflow.sketch import BlockSketch
from inflow.sketch.cache import MIB

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def fake_adam_state(dim: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """AdamW moments ``m, v [D]`` of plausible size (as after a short warmup), on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    exp_avg = torch.randn(dim, generator=gen) * 1e-3
    exp_avg_sq = torch.rand(dim, generator=gen) * 1e-6 + 1e-9
    return exp_avg.to(device), exp_avg_sq.to(device)


@dataclass
class DefaultsRun:
    """One defaults extraction, ready to run: :meth:`__call__` featurizes every row as one chunk."""

    ctx: SimpleNamespace  # what featurize reads of a FeatureContext
    rows: list[Encoded]
    size: ModelSize
    precision: str
    batch_tokens: int
    workers: int  # gradient batches at once (a CPU: one per core)
    causal_only: bool
    group_mib: int
    resident: int  # GPU bytes held before any batch (weights, LoRA, Adam moments); 0 on a CPU
    compiled: bool = False  # the decoder layers are compiled (features.compile)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(rows, padded width) of every batch, in order."""
        return [(len(b), bucket_width(len(self.rows[b[0]])))
                for b in token_batches([len(r) for r in self.rows], self.batch_tokens)]

    def __call__(self) -> torch.Tensor:
        with torch_threads(1 if self.device.type == "cpu" else 0):
            return featurize(self.ctx, self.rows, self.batch_tokens, True, self.group_mib * MIB, self.workers,
                             causal_only=self.causal_only)


def defaults_run(size: ModelSize, device: str, examples: int, min_len: int, max_len: int, *, r: int = 8,
                 seed: int = 0, kind: str = "rademacher", sketch_dim: int = 8192, batch_threads: int = 0,
                 gradient_checkpointing: bool = False, padding_mask: bool = False,
                 compile: bool = False) -> DefaultsRun:
    """Build the model, the rows and the features context of a defaults extraction (``device``: cpu, cuda, cuda:N;
    cpu means auto, which is the CPU where no GPU is visible)."""
    dev = resolve_device("auto" if device == "cpu" else device, "--device")
    precision = resolve_precision("auto", dev)
    amp = autocast_dtype(precision, dev)
    model = tiny_lora_model(size, r=r, seed=seed, attention="sdpa", device=dev)
    if amp is not None:  # as FeatureContext prepares it (compiled layers share their casts themselves)
        autocast_only(model, amp, share_casts=not compile)
    if compile:
        compile_layers(model)
    if gradient_checkpointing:
        checkpoint_layers(model)
    sizes = [b.size for b in lora_blocks(model)]
    exp_avg, exp_avg_sq = fake_adam_state(sum(sizes), seed, dev)
    resident = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    ctx = SimpleNamespace(model=model, pad_id=0, device=dev, autocast=amp, preconditioner=None, hvp_batches=[],
                          adam=SimpleNamespace(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, beta1=BETA1, beta2=BETA2,
                                               eps=EPS),
                          sketch=BlockSketch(kind, seed, sizes, sketch_dim, dev, tf32=sketch_tf32_on(dev, precision)))
    return DefaultsRun(ctx=ctx, rows=synthetic_examples(examples, size.vocab, min_len, max_len, seed=seed), size=size,
                       precision=precision,
                       batch_tokens=default_batch_tokens(model.config, dev, resident_bytes=module_bytes(model),
                                                         checkpointing=gradient_checkpointing),
                       workers=resolve_threads(batch_threads) if dev.type == "cpu" and not compile else 1,
                       causal_only=causal_only_on(dev) and not padding_mask, group_mib=default_group_mib(dev),
                       resident=resident, compiled=compile)
