"""The ``warmup`` (selector) and ``finetune`` (target) steps: LoRA training runs over pool rows."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import torch

from inflow.config import DataConfig, FinetuneConfig, WarmupConfig
from inflow.data.pool import load_pool
from inflow.data.render import encode_pool
from inflow.models.loading import apply_lora, load_causal_lm, resolve_model_dir
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.paths import WARMUP_MANIFEST
from inflow.training.loop import train_lora, training_device

log = logging.getLogger(__name__)


def warmup_subset(pool: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """A uniformly random ``fraction`` of the pool (at least one row), in pool order."""
    n = max(1, math.ceil(fraction * len(pool)))
    rows = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
    return pool[rows.tolist()]


def _train(rows: pl.DataFrame, cfg, data: DataConfig, model_dir: str | Path, ckpt_dir: Path | None, desc: str):
    """LoRA training of ``rows``; ``cfg.seed`` fixes the LoRA init and dropout (torch's global RNG, and the training
    GPU's, restored after), so a rerun, or DVC rebuilding the stage, gives the same adapter.

    With ``precision: bfloat16`` on a GPU the frozen base weights are loaded in bfloat16 (half the memory; the
    LoRA weights stay float32); otherwise in float32.
    """
    tokenizer = load_tokenizer(resolve_model_dir(model_dir))
    encoded, dropped = encode_pool(rows, tokenizer, data.max_seq_len, label_newline=data.label_newline)
    device = training_device(cfg)
    dtype = torch.bfloat16 if cfg.precision == "bfloat16" and device.type == "cuda" else torch.float32
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(cfg.seed)  # LoRA init on the CPU, so CPU and GPU runs start from the same adapter
        model = apply_lora(load_causal_lm(model_dir, dtype=dtype), cfg.lora)
        result = train_lora(model, encoded, cfg, pad_token_id(tokenizer), ckpt_dir, desc=desc)
    return model, tokenizer, result, len(encoded), dropped


def run_warmup(cfg: WarmupConfig, data: DataConfig, model_dir: str | Path, out_dir: str | Path) -> dict:
    """LESS warmup: LoRA on a random ``cfg.fraction`` of the pool, a checkpoint per epoch under ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a warmup is one run: never mix checkpoints of two runs
    subset = warmup_subset(load_pool(data.pool), cfg.fraction, cfg.seed)
    _, _, result, n, dropped = _train(subset, cfg, data, model_dir, out_dir, "warmup")
    manifest = {"examples": n, "dropped": dropped, "steps": len(result.log_history),
                "checkpoints": [p.name for p in result.checkpoints],
                "example_ids": subset["example_id"].to_list()}
    (out_dir / WARMUP_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return {k: v for k, v in manifest.items() if k != "example_ids"}


def run_finetune(cfg: FinetuneConfig, data: DataConfig, model_dir: str | Path, selection: str | Path,
                 out_dir: str | Path) -> dict:
    """Fine-tune the target model with LoRA on the pool rows in ``selection`` (JSONL); save the adapter."""
    out_dir = Path(out_dir)
    rows = load_pool(selection)
    model, tokenizer, result, n, dropped = _train(rows, cfg, data, model_dir, None, f"finetune {out_dir.name}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses = [e["loss"] for e in result.log_history]
    manifest = {"examples": n, "dropped": len(dropped), "steps": len(losses), "selection": str(selection),
                "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:]))}
    (out_dir / "finetune.json").write_text(json.dumps(manifest, indent=2))
    log.info("fine-tuned %s: %s", out_dir, manifest)
    return manifest
