"""The ``base`` step: a tiny pretrained model for the demo, or a reference to the user's checkpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inflow.config import ModelConfig
from inflow.models.factory import build_tiny_model, count_parameters, save_model
from inflow.models.loading import write_model_ref
from inflow.models.tokenizer import load_tokenizer
from inflow.training.loop import pack_tokens, pretrain_causal_lm

log = logging.getLogger(__name__)


def build_base_model(cfg: ModelConfig, tokenizer_dir: str | Path, texts: Sequence[str], out_dir: str | Path,
                     max_seq_len: int) -> dict:
    """Write the base checkpoint of one role to ``out_dir``.

    ``build: false``: ``out_dir/model_ref.json`` points at ``cfg.path``. Otherwise a tiny model of
    ``cfg.family`` is built, pretrained for ``cfg.pretrain_epochs`` on ``texts`` (packed), and saved with the
    tokenizer (``save_pretrained``).
    """
    out_dir = Path(out_dir)
    if not cfg.build:
        write_model_ref(out_dir, cfg.path)
        return {"path": cfg.path, "built": False}
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_tiny_model(cfg, tokenizer, max_positions=max_seq_len)
    losses: list[float] = []
    if cfg.pretrain_epochs > 0:
        docs = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        blocks = pack_tokens(docs, tokenizer.eos_token_id, block=min(128, max_seq_len))
        losses = pretrain_causal_lm(model, blocks, cfg.pretrain_epochs, cfg.pretrain_lr, cfg.pretrain_batch_size,
                                    cfg.seed)
    save_model(model, tokenizer, out_dir)
    manifest = {
        "family": cfg.family,
        "parameters": count_parameters(model),
        "pretrain_steps": len(losses),
        "pretrain_first_loss": losses[0] if losses else None,
        "pretrain_last_loss": float(np.mean(losses[-10:])) if losses else None,
        "built": True,
    }
    (out_dir / "pretrain.json").write_text(json.dumps(manifest, indent=2))
    log.info("base model %s: %s", out_dir, manifest)
    return manifest
