"""Explicit training loops: LoRA fine-tuning with AdamW (warmup and target fine-tuning) and the demo's
full-parameter causal-LM pretraining.

The loops are written out in full (no Trainer) so every step is visible: shuffle, cut into micro-batches,
accumulate ``grad_accum`` of them per optimizer step, clip, AdamW, HF's linear schedule with warmup, a log
entry per optimizer step, and a HF-Trainer-layout checkpoint at the end of every epoch (with optimizer state:
LESS's Adam features need it). ``tests/training/test_trainer_parity.py`` checks that, with ``loss: token``,
:func:`train_lora` takes the same steps as ``transformers.Trainer``; docs/training.md lists where they differ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from inflow.config import FinetuneConfig, TrainConfig, WarmupConfig
from inflow.data.batching import IGNORE_INDEX, Encoded, collate
from inflow.devices import autocast, autocast_dtype, resolve_device
from inflow.gradients.per_example import example_losses
from inflow.training.checkpoint import save_trainer_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run leaves: its log (one entry per optimizer step) and checkpoint directories, oldest first."""

    log_history: list[dict] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """HF's ``get_linear_schedule_with_warmup``: lr(t) = lr0 * t/warmup for t < warmup (0 at t = 0), then
    lr0 * (total - t)/(total - warmup), floored at 0. ``t`` counts optimizer steps taken."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits rows ``0..n-1``: a permutation seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def accumulation_groups(order: Sequence[int], batch_size: int, grad_accum: int) -> list[list[list[int]]]:
    """Cut ``order`` into micro-batches of ``batch_size`` rows, then into groups of ``grad_accum`` micro-batches,
    one group per optimizer step. As in the HF Trainer, the epoch's last micro-batch and last group may be short."""
    micro = [list(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
    return [micro[start:start + grad_accum] for start in range(0, len(micro), grad_accum)]


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """The batch's loss terms, summed (a scalar): ``token``: the next-token cross-entropy summed over all answer
    tokens; ``example``: each example's mean answer-token cross-entropy, summed over examples.

    ``logits [B, T, V]`` (any float dtype; reduced in float32 at least), ``labels [B, T]`` (``-100``: not scored).
    Dividing by :func:`loss_normaliser` of the optimizer step's micro-batches gives the step's mean loss.
    """
    if loss == "example":
        return example_losses(logits, labels).sum()
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    shifted = logits[:, :-1]
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def loss_normaliser(batches: Sequence[dict[str, torch.Tensor]], loss: str) -> int:
    """What one optimizer step's summed losses are divided by: its answer tokens after the shift (``token``; HF's
    ``num_items_in_batch``) or its examples (``example``), over all its micro-batches."""
    if loss == "example":
        return sum(len(batch["labels"]) for batch in batches)
    return sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in batches)


def _section(cfg: TrainConfig) -> str:
    """The params.yaml section ``cfg`` came from (for error messages)."""
    return "warmup" if isinstance(cfg, WarmupConfig) else "finetune" if isinstance(cfg, FinetuneConfig) else "train"


def training_device(cfg: TrainConfig) -> torch.device:
    """``cfg.device`` as a torch device (``auto``: cuda when a GPU is visible); errors name the params key."""
    return resolve_device(cfg.device, f"{_section(cfg)}.device")


def _precision(cfg: TrainConfig) -> tuple[torch.device, torch.dtype | None, torch.amp.GradScaler | None]:
    """The training device, the autocast dtype (None: float32) and, for float16 on a GPU, a loss scaler."""
    device = training_device(cfg)
    dtype = autocast_dtype(cfg.precision, device, f"{_section(cfg)}.precision")
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return device, dtype, scaler


def _set_checkpointing(model: torch.nn.Module, enable: bool) -> None:
    """Turn activation (gradient) checkpointing of the HF model inside ``model`` on or off. Non-reentrant
    checkpointing; inputs of the frozen embeddings require grad so the LoRA layers' gradients flow through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        if enable:
            base.activation_checkpointing_enable({"use_reentrant": False})  # also enables input grads
        else:
            base.activation_checkpointing_disable()
    elif enable:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    else:
        base.gradient_checkpointing_disable()
    if not enable:
        base.disable_input_require_grads()


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: LambdaLR, scaler: torch.amp.GradScaler | None,
                    params: list[torch.nn.Parameter], max_grad_norm: float) -> float | None:
    """Unscale (float16), clip to ``max_grad_norm`` (0: no clipping), step AdamW and the schedule, zero the grads.

    Returns the gradient norm before clipping (None without clipping). As in the HF Trainer, a float16 step the
    scaler skips (inf/nan gradients) does not advance the schedule.
    """
    grad_norm = None
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if scaler is None:
        optimizer.step()
        scheduler.step()
    else:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() >= scale:  # the scale drops exactly when the step was skipped
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def train_lora(
    model: torch.nn.Module,
    examples: Sequence[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    out_dir: str | Path | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train the trainable (LoRA) parameters of ``model`` on ``examples`` with AdamW on ``cfg.device``.

    Each optimizer step sees ``cfg.grad_accum`` micro-batches of ``cfg.batch_size`` rows; its loss is the mean
    over the whole effective batch (``cfg.loss``: of per-example mean answer-token losses, or over answer tokens),
    so the accumulated gradient is that mean's gradient. The forward/backward runs under ``cfg.precision``
    autocast; the gradient is clipped to ``cfg.max_grad_norm``; the lr follows :func:`linear_schedule` with
    ceil(warmup_ratio * total) warmup steps. Each log entry holds the step, fractional epoch, the lr the step used,
    its loss and (when clipping) the gradient norm. With ``out_dir``, writes ``out_dir/checkpoint-<step>`` (HF
    Trainer layout) after every epoch. The model is left on the training device, in eval mode, final weights.
    """
    if not examples:
        raise ValueError("nothing to train on: the selection is empty")
    device, dtype, scaler = _precision(cfg)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    n_micro = math.ceil(len(examples) / cfg.batch_size)  # micro-batches per epoch
    total = math.ceil(n_micro / cfg.grad_accum) * cfg.epochs
    scheduler = linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    if cfg.gradient_checkpointing:
        _set_checkpointing(model, True)
    result = TrainResult()
    step = 0
    model.train()
    bar = tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=2.0)
    for epoch in range(cfg.epochs):
        done = 0  # micro-batches of this epoch done
        for group in accumulation_groups(epoch_order(len(examples), cfg.seed, epoch), cfg.batch_size, cfg.grad_accum):
            batches = [collate([examples[i] for i in rows], pad_id) for rows in group]
            norm = loss_normaliser(batches, cfg.loss)
            parts = []  # each micro-batch's share of the step's loss (no GPU sync until the step ends)
            for batch in batches:
                batch = {key: value.to(device) for key, value in batch.items()}
                with autocast(device, dtype):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = summed_loss(logits, batch["labels"], cfg.loss) / norm
                (loss if scaler is None else scaler.scale(loss)).backward()
                parts.append(loss.detach())
            done += len(batches)
            lr = scheduler.get_last_lr()[0]  # the lr this step uses (what LESS's checkpoint weights average)
            grad_norm = _optimizer_step(optimizer, scheduler, scaler, params, cfg.max_grad_norm)
            step += 1
            entry = {"step": step, "epoch": round(epoch + done / n_micro, 6), "learning_rate": lr,
                     "loss": float(sum(parts))}
            if grad_norm is not None:
                entry["grad_norm"] = grad_norm
            result.log_history.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", epoch=epoch + 1)
        if out_dir is not None:
            path = save_trainer_checkpoint(Path(out_dir) / f"checkpoint-{step}", model, optimizer, scheduler,
                                           global_step=step, epoch=float(epoch + 1),
                                           log_history=list(result.log_history))
            result.checkpoints.append(path)
        log.info("%s: epoch %d/%d, last loss %.4f", desc, epoch + 1, cfg.epochs, result.log_history[-1]["loss"])
    bar.close()
    if cfg.gradient_checkpointing:
        _set_checkpointing(model, False)
    model.eval()
    return result


def pack_tokens(token_lists: Sequence[Sequence[int]], eos_id: int, block: int) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) and cut into rows of ``block`` tokens: [n_blocks, block]."""
    flat: list[int] = []
    for tokens in token_lists:
        flat.extend(tokens)
        flat.append(eos_id)
    n = len(flat) // block
    if n == 0:
        raise ValueError(f"corpus too small: {len(flat)} tokens for blocks of {block}")
    return torch.tensor(flat[: n * block], dtype=torch.long).view(n, block)


def pretrain_causal_lm(
    model: torch.nn.Module, blocks: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int
) -> list[float]:
    """Full-parameter next-token training on packed ``blocks`` [n, block]; returns the per-step losses."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(blocks) / batch_size)
    scheduler = linear_schedule(optimizer, max(1, steps_per_epoch * epochs // 20), steps_per_epoch * epochs)
    losses = []
    bar = tqdm(total=steps_per_epoch * epochs, desc="pretrain", unit="step", leave=False, mininterval=2.0)
    for epoch in range(epochs):
        order = epoch_order(len(blocks), seed, epoch)
        for start in range(0, len(blocks), batch_size):
            batch = blocks[order[start:start + batch_size]]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses
