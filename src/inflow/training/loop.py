"""Explicit training loops: LoRA fine-tuning with AdamW (warmup and target fine-tuning) and the demo's
full-parameter causal-LM pretraining.

The loops are written out in full (no Trainer) so every step is visible: shuffle, collate, per-example
loss, AdamW, linear schedule with warmup, a log entry per step, and a HF-Trainer-layout checkpoint at the
end of every epoch (with optimizer state: LESS's Adam features need it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from inflow.config import TrainConfig
from inflow.data.batching import Encoded, collate
from inflow.gradients.per_example import example_losses
from inflow.training.checkpoint import save_trainer_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run leaves: its step log and the checkpoint directories, oldest first."""

    log_history: list[dict] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """lr(t) = lr0 * t/warmup for t < warmup, then lr0 * (total - t)/(total - warmup) (HF's linear schedule)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def train_lora(
    model: torch.nn.Module,
    examples: Sequence[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    out_dir: str | Path | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train the trainable (LoRA) parameters of ``model`` on ``examples`` with AdamW.

    Loss per batch = mean over its examples of each example's mean answer-token cross-entropy.
    With ``out_dir``, writes ``out_dir/checkpoint-<step>`` (HF Trainer layout) after every epoch.
    The model is left in eval mode with the final weights.
    """
    if not examples:
        raise ValueError("nothing to train on: the selection is empty")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    scheduler = linear_schedule(optimizer, int(cfg.warmup_ratio * total), total)
    result = TrainResult()
    step = 0
    model.train()
    bar = tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=2.0)
    for epoch in range(cfg.epochs):
        order = _epoch_order(len(examples), cfg.seed, epoch)
        for start in range(0, len(order), cfg.batch_size):
            batch = collate([examples[i] for i in order[start:start + cfg.batch_size]], pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = example_losses(logits, batch["labels"]).mean()
            loss.backward()
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.log_history.append({"step": step, "epoch": round(step / steps_per_epoch, 6),
                                       "learning_rate": lr, "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(loss=f"{result.log_history[-1]['loss']:.3f}", epoch=epoch + 1)
        if out_dir is not None:
            path = save_trainer_checkpoint(Path(out_dir) / f"checkpoint-{step}", model, optimizer, scheduler,
                                           global_step=step, epoch=float(epoch + 1),
                                           log_history=list(result.log_history))
            result.checkpoints.append(path)
        log.info("%s: epoch %d/%d, last loss %.4f", desc, epoch + 1, cfg.epochs, result.log_history[-1]["loss"])
    bar.close()
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
        order = _epoch_order(len(blocks), seed, epoch)
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

