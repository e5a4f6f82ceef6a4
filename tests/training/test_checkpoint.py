"""HF-Trainer-layout checkpoints: save/load round trip, optimizer slot mapping, checkpoint learning rate."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.optim.lr_scheduler import LambdaLR
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.errors import CheckpointError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.per_example import example_losses
from inflow.training.checkpoint import (
    AdamState,
    checkpoint_mean_lr,
    find_checkpoints,
    load_adam_state,
    load_adapter_into,
    save_trainer_checkpoint,
)


def base_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config)


def tiny_lora(r: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> torch.nn.Module:
    lora = LoraConfig(r=r, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets), task_type="CAUSAL_LM")
    return get_peft_model(base_model(), lora)


def trained(r: int = 4, steps: int = 2) -> tuple[torch.nn.Module, torch.optim.AdamW, LambdaLR]:
    """A LoRA model after ``steps`` real AdamW steps, with HF Trainer's (decay, no-decay) param groups."""
    model = tiny_lora(r)
    params = [p for _, p in lora_parameters(model)]
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": 0.01}, {"params": [], "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95), eps=1e-6)
    scheduler = LambdaLR(optimizer, lambda step: 1.0 - 0.1 * step)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, 97, (3, 10), generator=generator)
        labels = ids.clone()
        labels[:, :4] = -100
        example_losses(model(input_ids=ids).logits, labels).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer, scheduler


def shapes(model: torch.nn.Module) -> list[tuple[str, torch.Size]]:
    return [(name, p.shape) for name, p in lora_parameters(model)]


def moments(model: torch.nn.Module, optimizer: torch.optim.Optimizer, key: str) -> torch.Tensor:
    return torch.cat([optimizer.state[p][key].reshape(-1) for _, p in lora_parameters(model)])


LOG = [{"step": 1, "epoch": 0.5, "learning_rate": 1e-3, "loss": 2.0},
       {"step": 2, "epoch": 1.0, "learning_rate": 9e-4, "loss": 1.9}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.optim.AdamW]:
    model, optimizer, scheduler = trained()
    run = tmp_path_factory.mktemp("run")
    path = save_trainer_checkpoint(run / "checkpoint-2", model, optimizer, scheduler, global_step=2, epoch=1.0,
                                   log_history=LOG, extra_state={"train_batch_size": 3})
    return path, model, optimizer


def test_checkpoint_has_the_trainer_layout_and_nothing_temporary(saved) -> None:
    path, _, _ = saved
    names = {p.name for p in path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
            "trainer_state.json"} <= names
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == 1.0 and state["log_history"] == LOG
    assert state["train_batch_size"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint-2"]
    raw = torch.load(path / "optimizer.pt", weights_only=True)
    assert all(isinstance(key, int) for key in raw["state"])


def test_adam_state_round_trips_from_optimizer_pt(saved) -> None:
    path, model, optimizer = saved
    state = load_adam_state(path, shapes(model))
    assert isinstance(state, AdamState)
    assert torch.equal(state.exp_avg, moments(model, optimizer, "exp_avg"))
    assert torch.equal(state.exp_avg_sq, moments(model, optimizer, "exp_avg_sq"))
    assert state.exp_avg.abs().sum() > 0
    assert (state.step, state.beta1, state.beta2, state.eps) == (2, 0.9, 0.95, 1e-6)
    assert state.lr == pytest.approx(1e-3 * 0.8)


def test_adapter_loads_trainable_into_a_fresh_base(saved) -> None:
    path, model, _ = saved
    loaded = load_adapter_into(base_model(), path)
    original = dict(lora_parameters(model))
    params = lora_parameters(loaded)
    assert [n for n, _ in params] == list(original)
    assert all(p.requires_grad and torch.equal(p, original[n]) for n, p in params)
    assert load_adam_state(path, shapes(loaded)).exp_avg.shape[0] == sum(p.numel() for _, p in params)


def fsdp_name(name: str) -> str:
    """How FSDP (use_orig_params) names a parameter: wrapper segments around the layers."""
    return "_fsdp_wrapped_module." + re.sub(r"(\.layers\.\d+)\.", r"\1._fsdp_wrapped_module.", name)


def name_keyed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rename, group_ids: str) -> dict:
    """An FSDP / accelerate ``optimizer.bin``: state keyed by (renamed) parameter name, in a shuffled order.

    ``group_ids``: what ``param_groups`` lists, ``"names"`` (FSDP full optimizer state dicts) or ``"ints"``
    (LESS's own optimizer.bin, whose state is name-keyed while its groups keep integer ids).
    """
    names = [rename(n) for n, _ in lora_parameters(model)]
    by_name = {name: optimizer.state[p] for name, (_, p) in zip(names, lora_parameters(model))}
    order = names[::-1]  # stored order differs from the model's: matching must go by name
    random.Random(0).shuffle(order)
    group = {k: v for k, v in optimizer.state_dict()["param_groups"][0].items() if k != "params"}
    ids = order if group_ids == "names" else list(range(len(order)))
    return {"state": {n: by_name[n] for n in order}, "param_groups": [dict(group, params=ids)]}


def unwrapped(name: str) -> str:
    return name.replace("base_model.model.", "").replace(".default", "")


@pytest.mark.parametrize("group_ids", ["names", "ints"])
@pytest.mark.parametrize("rename", [fsdp_name, unwrapped, lambda n: n])
def test_adam_state_from_name_keyed_optimizer_bin(saved, tmp_path: Path, rename, group_ids: str) -> None:
    path, model, optimizer = saved
    torch.save(name_keyed(model, optimizer, rename, group_ids), tmp_path / "optimizer.bin")
    state = load_adam_state(tmp_path, shapes(model))
    assert torch.equal(state.exp_avg, moments(model, optimizer, "exp_avg"))
    assert torch.equal(state.exp_avg_sq, moments(model, optimizer, "exp_avg_sq"))
    assert (state.step, state.beta1, state.beta2, state.eps) == (2, 0.9, 0.95, 1e-6)


def test_less_optimizer_bin_with_another_rank_names_the_parameter(saved, tmp_path: Path) -> None:
    path, model, optimizer = saved
    torch.save(name_keyed(model, optimizer, fsdp_name, "ints"), tmp_path / "optimizer.bin")
    with pytest.raises(CheckpointError, match=r"exp_avg of .*lora_A\.default\.weight.*\(4, 32\).*\(8, 32\)"):
        load_adam_state(tmp_path, shapes(tiny_lora(r=8)))
    with pytest.raises(CheckpointError, match="holds 8 parameters but the model has 6"):
        load_adam_state(tmp_path, shapes(model)[:6])


def test_mixed_state_keys_are_an_error(saved, tmp_path: Path) -> None:
    path, model, optimizer = saved
    raw = optimizer.state_dict()
    first = next(iter(raw["state"]))
    raw["state"]["renamed"] = raw["state"].pop(first)
    torch.save(raw, tmp_path / "optimizer.bin")
    with pytest.raises(CheckpointError, match="mixes parameter names and integer ids"):
        load_adam_state(tmp_path, shapes(model))


def test_rank_mismatch_names_the_parameter_and_the_fix(saved) -> None:
    path, _, _ = saved
    other = shapes(tiny_lora(r=8))
    with pytest.raises(CheckpointError, match=r"lora_A\.default\.weight.*\(4, 32\).*\(8, 32\).*warmup\.lora"):
        load_adam_state(path, other)


def test_parameter_count_mismatch_is_an_error(saved) -> None:
    path, model, _ = saved
    with pytest.raises(CheckpointError, match="holds 8 parameters but the model has 6"):
        load_adam_state(path, shapes(model)[:6])


def test_name_keyed_state_without_a_match_is_an_error(saved, tmp_path: Path) -> None:
    path, model, optimizer = saved
    raw = optimizer.state_dict()
    names = [n.replace("q_proj", "k_proj") for n, _ in lora_parameters(model)]
    torch.save({"state": dict(zip(names, raw["state"].values())),
                "param_groups": [dict(raw["param_groups"][0], params=names)]}, tmp_path / "optimizer.bin")
    with pytest.raises(CheckpointError, match="no optimizer entry match the LoRA parameter .*q_proj"):
        load_adam_state(tmp_path, shapes(model))


def test_missing_optimizer_state_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="save_only_model"):
        load_adam_state(tmp_path, [])


def test_saving_again_replaces_the_checkpoint(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained(steps=1)
    target = tmp_path / "checkpoint-1"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_trainer_checkpoint(target, model, optimizer, None, global_step=1, epoch=1.0, log_history=[])
    assert not (target / "stale.txt").exists() and not (target / "scheduler.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]


def test_find_checkpoints_sorts_by_step(tmp_path: Path) -> None:
    for name in ("checkpoint-100", "checkpoint-9", "checkpoint-20", ".checkpoint-30.tmp-1", "logs"):
        (tmp_path / name).mkdir()
    assert [p.name for p in find_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-20", "checkpoint-100"]
    with pytest.raises(CheckpointError, match="dvc repro warmup"):
        find_checkpoints(tmp_path / "logs")


def write_state(path: Path, epoch: float, log_history: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"epoch": epoch, "global_step": 6,
                                                         "log_history": log_history}))
    return path


def test_mean_lr_covers_only_the_epoch_ending_at_the_checkpoint(tmp_path: Path) -> None:
    history = [{"step": s, "epoch": round(s / 3, 6), "learning_rate": lr, "loss": 1.0}
               for s, lr in enumerate([1.0, 2.0, 3.0, 10.0, 20.0, 60.0], start=1)]
    history.insert(3, {"step": 3, "epoch": 1.0, "eval_loss": 0.5})  # an evaluation log: no learning rate
    assert checkpoint_mean_lr(write_state(tmp_path / "checkpoint-3", 1.0, history[:4])) == pytest.approx(2.0)
    assert checkpoint_mean_lr(write_state(tmp_path / "checkpoint-6", 2.0, history)) == pytest.approx(30.0)
    assert checkpoint_mean_lr(write_state(tmp_path / "checkpoint-5", 1.666667, history[:6])) == pytest.approx(15.0)


def test_mean_lr_without_logged_rates_is_an_error(tmp_path: Path) -> None:
    ckpt = write_state(tmp_path / "checkpoint-3", 2.0, [{"step": 1, "epoch": 0.5, "learning_rate": 1.0}])
    with pytest.raises(CheckpointError, match="logging_steps"):
        checkpoint_mean_lr(ckpt)
