"""The benchmark scripts' own arithmetic: the FLOP model of the GPU figures, the peak table, and a smoke run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _common import QUICK_SIZE, SIZES, model_flops, peak_tflops, tiny_lora_model  # noqa: E402

from inflow.gradients.per_example import answer_positions, per_example_grads  # noqa: E402


def test_model_flops_matches_torch_flop_counter() -> None:
    """Forward + backward with frozen base weights, counted by torch, against ``model_flops`` (LoRA excluded)."""
    model = tiny_lora_model(QUICK_SIZE, r=2, seed=0)
    ids = torch.randint(3, QUICK_SIZE.vocab, (3, 40))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits.float().logsumexp(-1).sum().backward()
    counted = counter.get_total_flops()
    estimate = model_flops(QUICK_SIZE, [(3, 40)])
    # the counter also sees the rank-2 LoRA matmuls (forward, input and weight grads), a few % on top
    assert estimate <= counted <= 1.06 * estimate


def test_model_flops_counts_the_lm_head_on_kept_positions() -> None:
    """The extraction's forward/backward (logits at answer positions only), counted by torch."""
    model = tiny_lora_model(QUICK_SIZE, r=2, seed=0)
    ids = torch.randint(3, QUICK_SIZE.vocab, (2, 30))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = torch.where(torch.arange(30) >= 20, batch["input_ids"], -100)
    with FlopCounterMode(display=False) as counter:
        per_example_grads(model, batch)
    kept = answer_positions(batch["labels"]).numel()
    estimate = model_flops(QUICK_SIZE, [(2, 30)], [kept])
    assert kept == 10 and estimate <= counter.get_total_flops() <= 1.06 * estimate
    assert estimate < model_flops(QUICK_SIZE, [(2, 30)])


def test_the_1b_shape_has_a_billion_parameters() -> None:
    assert 0.95e9 < SIZES["1b"].linear_params() < 1.1e9


def test_peak_table() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "bfloat16") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA H200", "float32") == pytest.approx(66.9)
    assert peak_tflops("Some Other GPU", "bfloat16") == 0.0


@pytest.mark.slow
def test_extract_benchmark_runs_and_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    import extract

    extract.main(["--quick", "--examples", "8", "--repeats", "1", "--sketch-dim", "512", "--max-len", "48"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split())
    for key in ("speedup_vs_less_loop", "ratio_vs_train_step", "sketch_share"):
        assert float(figures[key]) > 0
    assert 0 < float(figures["sketch_share"]) < 1


@pytest.mark.slow
def test_distill_vs_less_benchmark_runs_and_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    import distill_vs_less

    params = BENCHMARKS.parent / "params.yaml"
    distill_vs_less.main(["--quick", "--params", str(params), "--sizes", "100", "120", "140", "--landmarks", "20"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = [dict(pair.split("=", 1) for pair in line.split()) for line in lines[-3:]]
    assert [int(f["pool_rows"]) for f in figures] == [100, 120, 140]
    for f in figures:
        assert float(f["speedup"]) > 0 and float(f["less_loss"]) > 0 and float(f["distill_loss"]) > 0
        assert float(f["loss_ratio"]) == pytest.approx(float(f["distill_loss"]) / float(f["less_loss"]), rel=1e-3)


@pytest.mark.slow
def test_in2core_layers_benchmark_runs_and_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    import in2core_layers

    params = BENCHMARKS.parent / "params.yaml"
    in2core_layers.main(["--quick", "--params", str(params), "--rows", "120"])
    lines = capsys.readouterr().out.strip().splitlines()
    figures = [dict(pair.split("=", 1) for pair in line.split()) for line in lines[-2:]]
    assert [f["layers"] for f in figures] == ["first:1", "last:1"]
    for f in figures:
        assert -1 <= float(f["spearman"]) <= 1 and 0 <= float(f["topk_overlap"]) <= 1
        assert 0 < int(f["dims"]) < int(f["all_dims"])  # one of the selector's two layers
        assert float(f["time_saved"]) == pytest.approx(1 - (float(f["extract_s"]) + float(f["influence_s"])) / (
            float(f["all_extract_s"]) + float(f["all_influence_s"])), abs=2e-3)


def test_activations_benchmark_counts_what_autocast_only_saves(capsys: pytest.CaptureFixture[str]) -> None:
    import activations

    activations.main(["--quick", "--tokens", "32", "--variants", "unshared,checkpointing"])  # compiled: below
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split())
    kib = {v: float(figures[f"kib_per_token_layer_{v}"])
           for v in ("fp32_weights", "unshared", "autocast_only", "checkpointing")}
    assert kib["fp32_weights"] > kib["unshared"] > kib["autocast_only"] > kib["checkpointing"] > 0
    assert float(figures["mib_per_layer_fp32_weights"]) > 10 * float(figures["mib_per_layer_autocast_only"])
    assert figures["unshared_same_bits"] == figures["checkpointing_same_bits"] == "true"
    assert 0 < float(figures["shared_rel_diff_max"]) < 0.05


@pytest.mark.slow
def test_activations_benchmark_counts_compiled_layers(capsys: pytest.CaptureFixture[str]) -> None:
    import activations

    activations.main(["--quick", "--tokens", "32", "--precision", "float32", "--variants", "compiled"])
    figures = dict(pair.split("=", 1) for pair in capsys.readouterr().out.strip().splitlines()[-1].split())
    # float32: the compiled graphs recompute cheap elementwise results instead of saving them
    assert 0 < float(figures["kib_per_token_layer_compiled"]) < float(figures["kib_per_token_layer_autocast_only"])
    assert float(figures["compiled_rel_diff_max"]) < 1e-5
    assert "checkpointing_same_bits" not in figures  # a variant not asked for is not run


def test_saved_activations_counts_distinct_storages_once() -> None:
    from _common import SavedActivations

    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedActivations(layer) as saved:
        y = layer(x)
        (y * y).sum().backward()  # linear saves x (weight: resident, not counted); mul saves y twice: once
    assert saved.bytes == (4 * 8 + 4 * 8) * 4
