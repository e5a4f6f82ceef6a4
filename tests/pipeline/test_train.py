"""The warmup and fine-tune steps are reproducible: the same settings give the same adapter, bit for bit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import load_file

from inflow import paths
from inflow.config import DataConfig
from inflow.pipeline.train import run_finetune


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
