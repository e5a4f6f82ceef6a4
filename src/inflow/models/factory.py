"""Tiny demo models: real Hugging Face checkpoints built from a config, written with ``save_pretrained``.

The selector (LESS's small model) is Llama-family, the target (LESS-T's larger model) Qwen2-family, so the
pipeline exercises two architectures. Everything downstream loads them with ``from_pretrained(path)``, the
same code a user's own checkpoint goes through.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config
from transformers import Qwen2ForCausalLM

from inflow.config import ModelConfig


def build_tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> PreTrainedModel:
    """A randomly initialised causal LM of ``cfg.family`` sized by ``cfg``; seeded by ``cfg.seed``.

    Grouped-query attention with half as many key/value heads (when the head count is even) keeps
    the code path the real Llama/Qwen2 models take.
    """
    kv_heads = cfg.num_heads // 2 if cfg.num_heads % 2 == 0 else cfg.num_heads
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    if cfg.family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if cfg.family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown model family {cfg.family!r}")  # config validation makes this unreachable


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` as one HF checkpoint directory (safetensors)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only the trainable ones)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
