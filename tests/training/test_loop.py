"""The explicit LoRA training loop: checkpoints per epoch with optimizer state, HF's schedule, gradient
accumulation (invariance to how the effective batch is cut), the two losses, clipping, checkpointing, precision."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from inflow.config import LoraConfig, TrainConfig, WarmupConfig
from inflow.data.batching import Encoded, collate
from inflow.errors import ConfigError, InflowError
from inflow.models.loading import apply_lora
from inflow.training.checkpoint import checkpoint_mean_lr, find_checkpoints, load_adam_state
from inflow.training.loop import (
    _optimizer_step,
    accumulation_groups,
    linear_schedule,
    loss_normaliser,
    pack_tokens,
    pretrain_causal_lm,
    summed_loss,
    train_lora,
)

NO_DROPOUT = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def _lora64() -> torch.nn.Module:
    """The tiny Llama with LoRA (no dropout) in float64: accumulation and checkpointing must not change a bit of
    the maths, so the runs compared below agree to rounding."""
    return apply_lora(_model(), NO_DROPOUT).double()


def _examples(n: int) -> list[Encoded]:
    # a learnable mapping: answer token = prompt token + 1
    out = []
    for i in range(n):
        a = 3 + i % 20
        out.append(Encoded(input_ids=(1, a, 2, a + 1), labels=(-100, -100, -100, a + 1), example_id=f"e{i}"))
    return out


def _ragged(n: int) -> list[Encoded]:
    """Examples with 1 to 3 answer tokens and different lengths: the two losses weigh them differently."""
    out = []
    for i in range(n):
        answer = [3 + (i + k) % 20 for k in range(1 + i % 3)]
        prompt = [1] * (1 + i % 2) + [2]
        out.append(Encoded(input_ids=prompt + answer, labels=[-100] * len(prompt) + answer, example_id=f"r{i}"))
    return out


def _lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_train_lora_writes_a_checkpoint_per_epoch_and_learns(tmp_path) -> None:
    model = apply_lora(_model(), NO_DROPOUT)
    cfg = TrainConfig(epochs=3, lr=5e-2, batch_size=4, warmup_ratio=0.05)
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


@pytest.mark.parametrize(("warmup", "total"), [(0, 5), (2, 6), (3, 10), (10, 10)])
def test_linear_schedule_is_hf_get_linear_schedule_with_warmup(warmup: int, total: int) -> None:
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    mine, hf = linear_schedule(ours, warmup, total), get_linear_schedule_with_warmup(theirs, warmup, total)
    for _ in range(total + 1):
        assert mine.get_last_lr() == hf.get_last_lr()
        for opt, sched in ((ours, mine), (theirs, hf)):
            opt.step()
            sched.step()


def test_linear_schedule_shape() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])


def test_log_counts_optimizer_steps_and_the_lr_each_used() -> None:
    # 10 rows, micro-batches of 3 -> 4 per epoch, 2 per step -> 2 steps per epoch, 6 in all, ceil(0.2*6) = 2 warmup
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=3, grad_accum=2, warmup_ratio=0.2)
    log = train_lora(apply_lora(_model(), NO_DROPOUT), _examples(10), cfg, pad_id=0).log_history
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert [e["epoch"] for e in log] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert [e["learning_rate"] / 1e-2 for e in log] == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])
    assert all(e["grad_norm"] > 0 for e in log)
    unclipped = dataclasses.replace(cfg, max_grad_norm=0.0)
    assert "grad_norm" not in train_lora(apply_lora(_model(), NO_DROPOUT), _examples(10), unclipped,
                                         pad_id=0).log_history[0]


def test_accumulation_groups_cut_like_the_trainer() -> None:
    groups = accumulation_groups(list(range(7)), batch_size=2, grad_accum=3)
    assert groups == [[[0, 1], [2, 3], [4, 5]], [[6]]]


@pytest.mark.parametrize("loss", ["example", "token"])
def test_accumulation_equals_one_big_batch(loss: str) -> None:
    """8 rows a step as one batch, 4 micro-batches of 2 or 2 of 4: the same losses, the same final weights
    (12 rows: each epoch's second step has 4 rows, a short group)."""
    runs = []
    for batch_size, grad_accum in ((8, 1), (2, 4), (4, 2)):
        model = _lora64()
        cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=0.2,
                          weight_decay=0.1, max_grad_norm=0.5, loss=loss)
        log = train_lora(model, _ragged(12), cfg, pad_id=0).log_history
        runs.append(([e["loss"] for e in log], [e["grad_norm"] for e in log], _lora_state(model)))
    (losses, norms, weights), others = runs[0], runs[1:]
    assert len(losses) == 4
    for other_losses, other_norms, other_weights in others:
        assert other_losses == pytest.approx(losses, rel=1e-12)
        assert other_norms == pytest.approx(norms, rel=1e-10)
        assert all(torch.allclose(weights[k], other_weights[k], rtol=1e-10, atol=1e-12) for k in weights)


def test_token_loss_is_the_models_own_loss_and_example_loss_the_mean_of_example_means() -> None:
    model = _lora64()
    examples = _ragged(5)
    batch = collate(examples, pad_id=0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token = summed_loss(logits, batch["labels"], "token") / loss_normaliser([batch], "token")
    own = model(**batch).loss
    assert token.item() == pytest.approx(own.item(), rel=1e-6)  # HF reduces the loss in float32
    example = summed_loss(logits, batch["labels"], "example") / loss_normaliser([batch], "example")
    singles = [model(**collate([e], pad_id=0)).loss.item() for e in examples]
    assert example.item() == pytest.approx(sum(singles) / len(singles), rel=1e-6)
    assert abs(example.item() - token.item()) > 1e-6  # ragged answers: the two losses differ


def test_gradient_checkpointing_changes_nothing_but_memory() -> None:
    runs = []
    for checkpointing in (False, True):
        model = _lora64()
        cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=4, gradient_checkpointing=checkpointing)
        log = train_lora(model, _ragged(8), cfg, pad_id=0).log_history
        runs.append(([e["loss"] for e in log], _lora_state(model)))
        # switched off again after training (the layers' own flag; the model's property was renamed in 5.2x)
        assert not any(getattr(m, "gradient_checkpointing", False) for m in model.get_base_model().modules())
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-12)
    assert all(torch.allclose(runs[0][1][k], runs[1][1][k], rtol=1e-10) for k in runs[0][1])


def test_bfloat16_autocast_trains_on_cpu() -> None:
    model = apply_lora(_model(), NO_DROPOUT)
    cfg = TrainConfig(epochs=2, lr=5e-2, batch_size=4, precision="bfloat16")
    losses = [e["loss"] for e in train_lora(model, _examples(16), cfg, pad_id=0).log_history]
    assert all(math.isfinite(x) for x in losses) and sum(losses[-2:]) < sum(losses[:2])
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_float16_needs_a_gpu() -> None:
    with pytest.raises(ConfigError, match="float16 needs a GPU"):
        TrainConfig(precision="float16")
    if not torch.cuda.is_available():
        with pytest.raises(InflowError, match="warmup.precision float16 needs a GPU"):
            train_lora(_model(), _examples(2), WarmupConfig(precision="float16", device="auto"), pad_id=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is visible")
def test_asking_for_a_missing_gpu_names_the_key() -> None:
    with pytest.raises(InflowError, match="warmup.device"):
        train_lora(_model(), _examples(2), WarmupConfig(device="cuda"), pad_id=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_training_on_a_gpu_learns(precision: str) -> None:
    base = _model()
    if precision == "bfloat16":
        base = base.to(torch.bfloat16)  # what the warmup / finetune steps load on a GPU
    model = apply_lora(base, NO_DROPOUT)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    cfg = TrainConfig(epochs=3, lr=5e-2, batch_size=4, grad_accum=2, device="cuda", precision=precision,
                      loss="token", gradient_checkpointing=True)
    losses = [e["loss"] for e in train_lora(model, _examples(32), cfg, pad_id=0).log_history]
    assert all(math.isfinite(x) for x in losses) and sum(losses[-2:]) < sum(losses[:2])
    assert next(model.parameters()).device.type == "cuda"


def test_loss_scaling_unscales_before_clipping_and_a_skipped_step_keeps_the_schedule() -> None:
    """float16 training's GradScaler (run here on the CPU): the logged norm is the true one, and a step whose
    gradients overflowed changes no weight and does not advance the lr schedule (as in the HF Trainer)."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    sched = linear_schedule(opt, 0, 10)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale((param * float("inf")).sum()).backward()
    _optimizer_step(opt, sched, scaler, [param], 1.0)
    assert sched.last_epoch == 0 and torch.equal(param.detach(), torch.ones(3))
    scaler.scale((param * 2).sum()).backward()
    assert _optimizer_step(opt, sched, scaler, [param], 1.0) == pytest.approx(math.sqrt(12))
    assert sched.last_epoch == 1 and param.grad is None


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
