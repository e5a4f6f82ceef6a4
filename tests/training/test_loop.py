"""The explicit LoRA training loop: checkpoints per epoch with optimizer state, schedule, learning."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.config import LoraConfig, TrainConfig
from inflow.data.batching import Encoded
from inflow.models.loading import apply_lora
from inflow.training.checkpoint import checkpoint_mean_lr, find_checkpoints, load_adam_state
from inflow.training.loop import linear_schedule, pack_tokens, pretrain_causal_lm, train_lora


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def _examples(n: int) -> list[Encoded]:
    # a learnable mapping: answer token = prompt token + 1
    out = []
    for i in range(n):
        a = 3 + i % 20
        out.append(Encoded(input_ids=(1, a, 2, a + 1), labels=(-100, -100, -100, a + 1), example_id=f"e{i}"))
    return out


def test_train_lora_writes_a_checkpoint_per_epoch_and_learns(tmp_path) -> None:
    model = apply_lora(_model(), LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")))
    cfg = TrainConfig(epochs=3, lr=5e-2, batch_size=4, warmup_ratio=0.1)
    result = train_lora(model, _examples(16), cfg, pad_id=0, out_dir=tmp_path)
    ckpts = find_checkpoints(tmp_path)
    assert [c.name for c in ckpts] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    assert result.checkpoints == ckpts
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 12 and len(state["log_history"]) == 12
    losses = [e["loss"] for e in result.log_history]
    assert sum(losses[-4:]) < sum(losses[:4])
    # Adam state is there and maps onto the LoRA parameters
    params = [(n, p.shape) for n, p in model.named_parameters() if p.requires_grad]
    adam = load_adam_state(ckpts[0], params)
    assert adam.exp_avg.numel() == sum(p.numel() for _, p in model.named_parameters() if p.requires_grad)
    # the linear schedule decays: later epochs have a lower mean lr
    assert checkpoint_mean_lr(ckpts[0]) > checkpoint_mean_lr(ckpts[1]) > checkpoint_mean_lr(ckpts[2])
    assert not model.training


def test_train_lora_is_seeded(tmp_path) -> None:
    runs = []
    for _ in range(2):
        model = apply_lora(_model(), LoraConfig(r=2, alpha=4, dropout=0.0, target_modules=("q_proj",)))
        runs.append([e["loss"] for e in train_lora(model, _examples(8), TrainConfig(epochs=1, batch_size=3),
                                                   pad_id=0).log_history])
    assert runs[0] == runs[1]


def test_linear_schedule_shape() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_pretraining_lowers_the_loss() -> None:
    model = _model()
    docs = [[3, 4, 5, 6, 7, 8]] * 40
    blocks = pack_tokens(docs, eos_id=2, block=7)
    assert blocks.shape == (40, 7)
    losses = pretrain_causal_lm(model, blocks, epochs=3, lr=1e-2, batch_size=8, seed=0)
    assert losses[-1] < losses[0] * 0.7


def test_empty_training_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        train_lora(_model(), [], TrainConfig(), pad_id=0)
