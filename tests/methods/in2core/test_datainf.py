"""DataInf's closed form against explicit float64 inverses on a tiny LoRA Llama's raw per-layer gradients; the
sketched store's blocks against the raw ones; reduced layers; the sign convention; coverage and layer specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.gradients.blocks import lora_blocks, lora_parameters
from inflow.gradients.per_example import per_example_grads_loop
from inflow.methods.in2core import Blocks, Coverage, fit_datainf, kept_blocks
from inflow.methods.in2core.datainf import dampings
from inflow.sketch.block import BlockSketch

VOCAB = 29


def _model() -> torch.nn.Module:
    """A 3-layer Llama with LoRA (r = 2) on q/v, random factors, float64: 3 layer blocks of 112 parameters."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM(config), lora).double()
    with torch.no_grad():
        for _, param in lora_parameters(model):
            param.normal_(0.0, 0.3)
    return model


def _grads(model: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """Raw per-example LoRA gradients ``[n, D]`` (one backward per row) of n random rows, answers the second half."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 13, (n,), generator=gen).tolist()
    ids = torch.zeros(n, 12, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for b, length in enumerate(lengths):
        ids[b, :length] = torch.randint(1, VOCAB, (length,), generator=gen)
        mask[b, :length] = 1
        labels[b, length // 2:length] = ids[b, length // 2:length]
    grads, _ = per_example_grads_loop(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    return grads.double()


@pytest.fixture(scope="module")
def raw() -> tuple[torch.Tensor, torch.Tensor, Blocks]:
    """(pool gradients [24, D], test gradients [5, D], their per-layer blocks)."""
    model = _model()
    blocks = Blocks.whole([b.size for b in lora_blocks(model)])
    return _grads(model, 24, seed=1), _grads(model, 5, seed=2), blocks


def _chunks(g: torch.Tensor, size: int = 7):
    return lambda: (g[i:i + size] for i in range(0, len(g), size))


def _explicit(train: torch.Tensor, test: torch.Tensor, blocks: Blocks) -> np.ndarray:
    """I[z, j] = −Σ_l g_{l,z}ᵀ [(1/n) Σ_i (g_{l,i} g_{l,i}ᵀ + λ_l I)⁻¹] v_{l,j}, inverses by numpy, float64."""
    g, v = train.numpy(), test.numpy()
    n = len(g)
    out = np.zeros((n, len(v)))
    for b in range(len(blocks)):
        cols = blocks.slice(b)
        gl, vl = g[:, cols], v[:, cols]
        lam = 0.1 * np.mean((gl ** 2).sum(1)) / gl.shape[1]
        inverse = np.mean([np.linalg.inv(np.outer(x, x) + lam * np.eye(len(x))) for x in gl], axis=0)
        out -= gl @ inverse @ vl.T
    return out


def test_closed_form_equals_explicit_inverses(raw) -> None:
    train, test, blocks = raw
    assert len(blocks) == 3
    fit = fit_datainf(_chunks(train), test, blocks)
    np.testing.assert_allclose(fit.influence(train).numpy(), _explicit(train, test, blocks), rtol=1e-9, atol=1e-12)
    # the dampings are DataInf's: 0.1 × mean squared gradient entry, per block
    expected = [0.1 * float(train[:, blocks.slice(b)].pow(2).mean()) for b in range(3)]
    np.testing.assert_allclose(fit.lam.numpy(), expected, rtol=1e-12)


def test_streaming_does_not_depend_on_chunking(raw) -> None:
    train, test, blocks = raw
    one = fit_datainf(_chunks(train, 24), test, blocks).influence(train)
    many = fit_datainf(_chunks(train, 5), test, blocks).influence(train)
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-14)


def test_mean_target_is_mean_of_row_influences(raw) -> None:
    train, test, blocks = raw
    rows = fit_datainf(_chunks(train), test, blocks).influence(train).mean(1)
    mean = fit_datainf(_chunks(train), test.mean(0, keepdim=True), blocks).influence(train)[:, 0]
    torch.testing.assert_close(rows, mean, rtol=1e-10, atol=1e-14)


def test_reduced_layers_equal_full_when_every_layer_is_kept(raw) -> None:
    train, test, blocks = raw
    fit = fit_datainf(_chunks(train), test, blocks)
    kept = fit.influence(train, blocks.columns(kept_blocks("all", len(blocks))))
    torch.testing.assert_close(kept, fit.influence(train), rtol=1e-12, atol=1e-14)
    # and one kept block is that block's own term
    first = fit.influence(train, blocks.columns([0]))
    alone = fit_datainf(_chunks(train[:, blocks.slice(0)]), test[:, blocks.slice(0)], Blocks.whole([blocks.widths[0]]))
    torch.testing.assert_close(first, alone.influence(train[:, blocks.slice(0)]), rtol=1e-10, atol=1e-14)


def test_a_training_row_that_copies_a_test_row_is_its_top_proponent(raw) -> None:
    train, test, blocks = raw
    pool = torch.cat([train, test[2:3]])  # the pool holds test row 2 itself
    influence = fit_datainf(_chunks(pool), test, blocks).influence(pool)
    assert influence[-1, 2] < 0  # negative = helpful
    assert int(influence[:, 2].argmin()) == len(pool) - 1
    coverage = Coverage(m=5, top=1)
    coverage.update(influence)
    assert coverage.result()["top"][2] == pytest.approx(-float(influence[-1, 2]))


def test_sketched_blocks_agree_with_raw_within_jl_tolerance(raw) -> None:
    train, test, blocks = raw
    exact = fit_datainf(_chunks(train), test, blocks).influence(train)
    sketch = BlockSketch("rademacher", 0, list(blocks.widths), 3 * 80)  # 112 → 80 per block
    layout = Blocks.from_sketch(sketch.to_attrs())
    assert layout.widths == (80, 80, 80) and layout.in_dims == blocks.widths == (112, 112, 112)
    projected_train = sketch.project(train.float()).double()
    projected_test = sketch.project(test.float()).double()
    approx = fit_datainf(_chunks(projected_train), projected_test, layout).influence(projected_train)
    # JL at 80 dims: inner products within a few 1/sqrt(80) of the norms; the ranking survives
    corr = np.corrcoef(exact.flatten().numpy(), approx.flatten().numpy())[0, 1]
    assert corr > 0.9, corr
    # and the sketch keeps block norms, hence the dampings, close
    lam_exact = dampings(torch.stack([train[:, blocks.slice(b)].pow(2).sum() for b in range(3)]), 24, blocks)
    lam_sketch = dampings(torch.stack([projected_train[:, layout.slice(b)].pow(2).sum() for b in range(3)]), 24,
                          layout)
    np.testing.assert_allclose(lam_sketch.numpy(), lam_exact.numpy(), rtol=0.3)


def test_coverage_accumulates_over_chunks() -> None:
    influence = torch.tensor([[-1.0, 2.0], [-3.0, -0.5], [0.5, -4.0], [-2.0, 1.0]], dtype=torch.float64)
    coverage = Coverage(m=2, top=2)
    coverage.update(influence[:3])
    coverage.update(influence[3:])
    out = coverage.result()
    assert out["total"].tolist() == [6.0, 4.5]
    assert out["top"].tolist() == [5.0, 4.5]
    assert out["count"].tolist() == [3, 2]


@pytest.mark.parametrize(("spec", "expected"), [("all", [0, 1, 2, 3]), ("first:2", [0, 1]), ("last:1", [3]),
                                                ("last:9", [0, 1, 2, 3]), ([3, -4, 3], [0, 3])])
def test_kept_blocks(spec, expected) -> None:
    assert kept_blocks(spec, 4) == expected


@pytest.mark.parametrize("spec", ["some", "first:0", "last:x", [4], []])
def test_kept_blocks_refuses_what_it_cannot_read(spec) -> None:
    with pytest.raises(ValueError, match="in2core.layers"):
        kept_blocks(spec, 4)
