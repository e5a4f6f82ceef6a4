"""Our explicit loop takes the same optimizer steps as ``transformers.Trainer``.

A tiny random Llama with LoRA is trained twice from identical weights on identical batches (the Trainer's
sampler is given our epoch order): by :func:`inflow.training.loop.train_lora` with ``loss: token`` and by the
Trainer with the same lr, warmup, weight decay, AdamW, clipping and gradient accumulation 2 (the epoch ends on a
short accumulation group). The per-step losses and learning rates, and the final LoRA weights, must agree.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from inflow.config import LoraConfig, TrainConfig
from inflow.data.batching import Encoded, collate
from inflow.models.loading import apply_lora
from inflow.training.loop import epoch_order, train_lora

PAD = 0
CFG = TrainConfig(epochs=2, lr=5e-3, batch_size=2, grad_accum=2, warmup_ratio=0.1, weight_decay=0.1,
                  max_grad_norm=0.3, loss="token", seed=3,
                  lora=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "down_proj")))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return apply_lora(LlamaForCausalLM(cfg), CFG.lora)


def _examples(n: int) -> list[Encoded]:
    """Prompts and answers of different lengths, so padding and the token count per step both vary."""
    out = []
    for i in range(n):
        prompt = [1] + [5 + (7 * i + k) % 50 for k in range(1 + i % 4)] + [2]
        answer = [5 + (3 * i + k) % 50 for k in range(1 + i % 3)]
        out.append(Encoded(input_ids=prompt + answer, labels=[-100] * len(prompt) + answer, example_id=f"p{i}"))
    return out


class _OurOrder(torch.utils.data.Sampler):
    """Visits rows in :func:`epoch_order` of the epoch the Trainer sets."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.n


class _OurOrderTrainer(Trainer):
    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler:
        return _OurOrder(len(train_dataset if train_dataset is not None else self.train_dataset), CFG.seed)


def _run_trainer(model: torch.nn.Module, examples: list[Encoded], out_dir) -> list[dict]:
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=CFG.epochs, per_device_train_batch_size=CFG.batch_size,
        gradient_accumulation_steps=CFG.grad_accum, learning_rate=CFG.lr, warmup_steps=CFG.warmup_ratio,
        lr_scheduler_type="linear", weight_decay=CFG.weight_decay, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=CFG.max_grad_norm,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True)
    trainer = _OurOrderTrainer(model=model, args=args, train_dataset=examples,
                               data_collator=lambda items: collate(items, PAD))
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_train_lora_takes_the_same_steps_as_the_hf_trainer(tmp_path) -> None:
    ours = _model()
    theirs = copy.deepcopy(ours)  # identical initial weights, LoRA included
    examples = _examples(18)  # 9 micro-batches of 2 an epoch: 5 optimizer steps, the last on one micro-batch
    mine = train_lora(ours, examples, CFG, pad_id=PAD).log_history
    hf = _run_trainer(theirs, examples, tmp_path)
    assert len(mine) == len(hf) == 10
    assert [e["loss"] for e in mine] == pytest.approx([e["loss"] for e in hf], abs=1e-5)
    assert [e["learning_rate"] for e in mine] == pytest.approx([e["learning_rate"] for e in hf], rel=1e-12)
    assert [e["grad_norm"] for e in mine] == pytest.approx([e["grad_norm"] for e in hf], rel=1e-4)
    assert [e["epoch"] for e in mine] == pytest.approx([e["epoch"] for e in hf], abs=1e-6)
    assert sum(e["grad_norm"] > CFG.max_grad_norm for e in mine) >= 3  # clipping did happen
    trained = {n: p for n, p in theirs.named_parameters() if p.requires_grad}
    for name, param in ours.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.detach(), trained[name].detach(), rtol=1e-4, atol=1e-6)
    assert mine[-1]["loss"] < mine[0]["loss"]
