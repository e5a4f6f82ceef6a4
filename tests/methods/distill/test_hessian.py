"""Target gradient and Hessian-vector products against dense float64 references on a tiny LoRA Llama: the dense
Hessian of the flat LoRA vector, equal weighting of rows across batches, eval mode, and the Adam influence terms
reducing to gradient descent's."""

from __future__ import annotations

import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.errors import InflowError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.per_example import example_losses, per_example_grads
from inflow.methods.distill import target_gradient, target_hvp

VOCAB = 31
ALL_LENGTHS = [11, 5, 14, 8, 6]


def _rms_norm_in_own_dtype(self: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm without its cast to float32 (which it makes even in a float64 model)."""
    return self.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def _model() -> torch.nn.Module:
    """A 2-layer Llama with LoRA (r = 2, dropout 0.1) on q/v and random factors (D = 224), float64 throughout.

    HF's RMSNorm computes in float32 even in a float64 model, so the loss is float32-accurate and its computed
    Hessian ~1e-7 asymmetric; with the norm kept in float64 the dense reference is symmetric to rounding.
    """
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         attn_implementation="sdpa")
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM(config), lora).double()
    with torch.no_grad():
        for _, param in lora_parameters(model):
            param.normal_(0.0, 0.3)
    for module in model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            module.forward = types.MethodType(_rms_norm_in_own_dtype, module)
    return model


def _batch(lengths: list[int], width: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded rows of the given lengths, the second half of each row its answer; row i uses seed + i, so a
    row is the same whichever batch it is put in."""
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for b, length in enumerate(lengths):
        tokens = torch.randint(1, VOCAB, (length,), generator=torch.Generator().manual_seed(seed + length))
        input_ids[b, :length] = tokens
        attention_mask[b, :length] = 1
        labels[b, length // 2:length] = tokens[length // 2:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _split_batches() -> list[dict[str, torch.Tensor]]:
    """The rows of ``_batch(ALL_LENGTHS, 16)`` in two batches of different sizes (2, 3) and widths."""
    return [_batch(ALL_LENGTHS[:2], 11), _batch(ALL_LENGTHS[2:], 14)]


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for _, p in lora_parameters(model)])


def _mean_loss_at(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """θ ↦ mean example loss of ``batch`` with the LoRA parameters set to the flat vector θ (full logits)."""
    names = [(name, p.shape, p.numel()) for name, p in lora_parameters(model)]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [numel for _, _, numel in names])
        values = {name: piece.view(shape) for (name, shape, _), piece in zip(names, pieces)}
        logits = functional_call(model, values, args=(), kwargs={
            "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}).logits
        return example_losses(logits, batch["labels"]).mean()
    return loss


def _dense_hessian(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """∇²L_T ``[D, D]`` by torch.autograd.functional.hessian, in eval mode with SDPA's twice-differentiable math
    backend (the fused CPU kernel has no double backward)."""
    model.eval()
    with sdpa_kernel([SDPBackend.MATH]):
        hessian = torch.autograd.functional.hessian(_mean_loss_at(model, batch), _flat_params(model), vectorize=True)
    assert (hessian - hessian.T).abs().max() < 1e-14 * max(1.0, float(hessian.abs().max()))
    return hessian


@pytest.fixture(scope="module")
def dense() -> torch.Tensor:
    """The dense Hessian of the mean loss of all ``ALL_LENGTHS`` rows for ``_model()`` (seeded: every call to
    ``_model()`` builds the same parameters), computed once for the module."""
    return _dense_hessian(_model(), _batch(ALL_LENGTHS, 16))


def test_hvp_matches_dense_hessian_and_restores_train_mode(dense: torch.Tensor) -> None:
    model = _model()
    batch = _batch(ALL_LENGTHS, 16)
    vectors = torch.randn(6, dense.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model.train()  # dropout 0.1 would make the products random: target_hvp must switch it off
    products = target_hvp(model, [batch], vectors)
    assert model.training and all(m.training for m in model.modules())
    assert products.shape == vectors.shape and products.dtype == torch.float64
    assert dense.abs().max() > 1e-2  # a real, non-trivial curvature
    assert (products - vectors @ dense).abs().max() < 1e-10
    assert (target_hvp(model, [batch], vectors, chunk_size=4) - products).abs().max() < 1e-13


def test_hvp_matches_central_differences_of_the_target_gradient() -> None:
    """An oracle without second-order autograd: H v ≈ (g_T(θ + εv) − g_T(θ − εv)) / 2ε, error O(ε²)."""
    model = _model()
    batches = _split_batches()
    params = [p for _, p in lora_parameters(model)]
    vector = torch.randn(_flat_params(model).numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    steps = torch.split(vector, [p.numel() for p in params])
    eps = 1e-5
    moved = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for param, step in zip(params, steps):
                param.add_(sign * eps * step.view(param.shape))
        moved.append(target_gradient(model, batches))
        with torch.no_grad():
            for param, step in zip(params, steps):
                param.sub_(sign * eps * step.view(param.shape))
    difference = (moved[0] - moved[1]) / (2 * eps)
    product = target_hvp(model, batches, vector[None])[0]
    assert (product - difference).abs().max() < 1e-7 * product.abs().max()


def test_rows_weigh_equally_across_batches() -> None:
    """Two batches of 2 and 3 rows (different widths) give the products and gradient of the 5 rows in one batch:
    each row weighs 1/5, not 1/(2 · batch size)."""
    model = _model()
    vectors = torch.randn(3, _flat_params(model).numel(), generator=torch.Generator().manual_seed(3),
                          dtype=torch.float64)
    whole = [_batch(ALL_LENGTHS, 16)]
    assert (target_hvp(model, _split_batches(), vectors) - target_hvp(model, whole, vectors)).abs().max() < 1e-10
    assert (target_gradient(model, _split_batches()) - target_gradient(model, whole)).abs().max() < 1e-12


def test_gradient_matches_autograd_of_the_mean_loss() -> None:
    model = _model()
    batch = _batch(ALL_LENGTHS, 16)
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    params = [p for _, p in lora_parameters(model)]
    expected = torch.cat([g.reshape(-1) for g in
                          torch.autograd.grad(example_losses(logits, batch["labels"]).mean(), params)])
    model.train()
    found = target_gradient(model, [batch])
    assert model.training and found.shape == expected.shape
    assert (found - expected).abs().max() < 1e-12
    assert all(p.grad is None for p in params)


def _adam_terms(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], grads: torch.Tensor,
                a: torch.Tensor, b: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p = G diag(a)(g_T − η H_T b) ``[n]`` and Q = (1/n) G diag(a) H_T diag(a) Gᵀ ``[n, n]`` from products only."""
    scaled = grads * a  # rows a ⊙ g_i
    g_t = target_gradient(model, batches)
    drift = target_hvp(model, batches, b[None])[0]
    p = scaled @ (g_t - eta * drift)
    q = scaled @ target_hvp(model, batches, scaled).T / grads.shape[0]
    return p, q


def test_adam_terms_reduce_to_gradient_descent_with_a_uniform_preconditioner(dense: torch.Tensor) -> None:
    """With a ≡ 1, b ≡ 0 the Adam terms are GD's p = G g_T and Q = (1/n) G H_T Gᵀ (dense H_T here); with any a, b
    they are the dense formulas G diag(a)(g_T − η H_T b) and (1/n) G diag(a) H_T diag(a) Gᵀ."""
    model = _model()
    batches = _split_batches()
    grads, _ = per_example_grads(model, _batch([9, 12, 7, 10], 12, seed=40))  # G_S [4, D]
    n, dim = grads.shape
    g_t = target_gradient(model, batches)
    eta = 0.3
    p, q = _adam_terms(model, batches, grads, torch.ones(dim, dtype=torch.float64),
                       torch.zeros(dim, dtype=torch.float64), eta)
    assert (p - grads @ g_t).abs().max() < 1e-12
    assert (q - grads @ dense @ grads.T / n).abs().max() < 1e-10
    generator = torch.Generator().manual_seed(5)
    a = torch.rand(dim, generator=generator, dtype=torch.float64) + 0.5
    b = torch.randn(dim, generator=generator, dtype=torch.float64)
    p, q = _adam_terms(model, batches, grads, a, b, eta)
    assert (p - (grads * a) @ (g_t - eta * dense @ b)).abs().max() < 1e-10
    assert (q - (grads * a) @ dense @ (grads * a).T / n).abs().max() < 1e-10


def test_bad_inputs_say_what_to_fix() -> None:
    model = _model()
    batch = _batch(ALL_LENGTHS, 16)
    dim = _flat_params(model).numel()
    with pytest.raises(ValueError, match="vectors must be"):
        target_hvp(model, [batch], torch.zeros(2, dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        target_hvp(model, [batch], torch.zeros(2, dim, dtype=torch.float64), chunk_size=0)
    with pytest.raises(ValueError, match="no target batches"):
        target_gradient(model, [])
    with pytest.raises(ValueError, match="lacks"):
        target_gradient(model, [{"input_ids": batch["input_ids"]}])
    model.get_base_model().config._attn_implementation = "flash_attention_2"
    with pytest.raises(InflowError, match="no second derivative"):
        target_hvp(model, [batch], torch.zeros(1, dim, dtype=torch.float64))
