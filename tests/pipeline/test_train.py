"""The warmup and fine-tune steps are reproducible: the same settings give the same adapter, bit for bit."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from inflow import paths
from inflow.config import DataConfig
from inflow.pipeline import train
from inflow.pipeline.train import run_finetune, run_warmup
from inflow.training.checkpoint import checkpoint_mean_lr


def test_finetune_twice_gives_the_same_adapter_and_leaves_torch_rng_alone(tiny_project, tmp_path: Path) -> None:
    params = tiny_project.params
    selection = tiny_project.write_pool(tmp_path / "selection.jsonl", slice(0, 24))
    data = DataConfig(pool=str(tiny_project.pool), targets=str(tiny_project.root / params.data.targets),
                      max_seq_len=params.data.max_seq_len)
    cfg = dataclasses.replace(params.finetune, epochs=1)  # dropout > 0: its masks come from the seeded RNG
    assert cfg.lora.dropout > 0
    base = tiny_project.root / paths.base_model_dir("selector")
    adapters = []
    for run in ("a", "b", "c"):
        torch.manual_seed(1234 if run != "b" else 99)  # whatever the caller's RNG state
        before = torch.random.get_rng_state()
        seeded = cfg if run != "c" else dataclasses.replace(cfg, seed=cfg.seed + 1)
        run_finetune(seeded, data, base, selection, tmp_path / run)
        assert torch.equal(torch.random.get_rng_state(), before)
        adapters.append(load_file(str(tmp_path / run / "adapter_model.safetensors")))
    a, b, c = adapters
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed matters


def _data(tiny_project) -> DataConfig:
    params = tiny_project.params
    return DataConfig(pool=str(tiny_project.pool), targets=str(tiny_project.root / params.data.targets),
                      max_seq_len=params.data.max_seq_len)


def test_warmup_with_accumulation_checkpoints_every_epoch_with_the_lr_of_every_step(tiny_project,
                                                                                   tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny_project.params.warmup, epochs=2, batch_size=2, grad_accum=2, loss="token")
    base = tiny_project.root / paths.base_model_dir("selector")
    manifest = run_warmup(cfg, _data(tiny_project), base, tmp_path / "warmup")
    per_epoch = math.ceil(math.ceil(manifest["examples"] / 2) / 2)
    assert manifest["steps"] == 2 * per_epoch
    assert manifest["checkpoints"] == [f"checkpoint-{per_epoch}", f"checkpoint-{2 * per_epoch}"]
    last = tmp_path / "warmup" / manifest["checkpoints"][-1]
    state = json.loads((last / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"]] == list(range(1, 2 * per_epoch + 1))
    assert state["log_history"][0]["learning_rate"] == 0.0  # HF's schedule: the first warmup step has lr 0
    assert checkpoint_mean_lr(last) > 0


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tiny_project, tmp_path: Path, monkeypatch) -> None:
    """Llama and Mistral tokenizers have no pad token: batches are padded with EOS (masked out anyway)."""
    seen: dict[str, int] = {}
    real_load, real_train = train.load_tokenizer, train.train_lora

    def padless(path):
        tokenizer = real_load(path)
        seen["own_pad"] = tokenizer.pad_token_id
        tokenizer.pad_token = None
        seen["eos"] = tokenizer.eos_token_id
        return tokenizer

    def spy(model, examples, cfg, pad_id, *args, **kwargs):
        seen["pad"] = pad_id
        return real_train(model, examples, cfg, pad_id, *args, **kwargs)

    monkeypatch.setattr(train, "load_tokenizer", padless)
    monkeypatch.setattr(train, "train_lora", spy)
    selection = tiny_project.write_pool(tmp_path / "selection.jsonl", slice(0, 8))
    cfg = dataclasses.replace(tiny_project.params.finetune, epochs=1)
    run_finetune(cfg, _data(tiny_project), tiny_project.root / paths.base_model_dir("selector"), selection,
                 tmp_path / "out")
    assert seen["pad"] == seen["eos"] is not None
    assert seen["own_pad"] != seen["eos"]  # the demo tokenizer's own pad token was not used
