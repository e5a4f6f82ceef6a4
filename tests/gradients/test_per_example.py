"""Batched per-example LoRA gradients against the one-backward-per-example reference, in float64.

The tiny models use SDPA attention: HF's eager attention computes its softmax in float32 even in a float64
model, so batches of different shapes (padded vs alone) agree only to ~1e-7 there, whatever the gradient
code does. ``test_eager_attention_agrees_to_its_float32_softmax`` covers eager at that tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from inflow.errors import InflowError
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.per_example import answer_positions, example_losses, per_example_grads, per_example_grads_loop

VOCAB = 97
QV = ("q_proj", "v_proj")
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_lora(family: str = "llama", targets: tuple[str, ...] = QV, dtype: torch.dtype = torch.float64,
              seed: int = 0, attention: str = "sdpa", **lora_kwargs) -> torch.nn.Module:
    """A 2-layer LoRA causal LM whose lora_B is random too, so both LoRA factors get non-zero gradients."""
    torch.manual_seed(seed)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    config = config_cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        attn_implementation=attention)
    model = model_cls(config).to(dtype)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=list(targets), task_type="CAUSAL_LM",
                      **lora_kwargs)
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for _, param in lora_parameters(model):
            param.normal_(0.0, 0.2)
    return model


def make_batch(lengths: list[int], width: int | None = None, seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded batch: random tokens, the second half of each example is its answer, pad id 0."""
    generator = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    input_ids = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for b, length in enumerate(lengths):
        attention_mask[b, :length] = 1
        labels[b, length // 2:length] = input_ids[b, length // 2:length]
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


LENGTHS = [11, 5, 14, 8]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_batched_grads_match_reference_loop_in_float64(family: str) -> None:
    model = tiny_lora(family)
    batch = make_batch(LENGTHS, width=16)
    grads, losses = per_example_grads(model, batch)
    ref_grads, ref_losses = per_example_grads_loop(model, batch)
    dim = sum(p.numel() for _, p in lora_parameters(model))
    assert grads.shape == (len(LENGTHS), dim) and grads.dtype == torch.float64
    assert torch.all(grads.abs().sum(dim=1) > 1e-3)  # every example has a real gradient
    assert (grads - ref_grads).abs().max() < 1e-10
    assert (losses - ref_losses).abs().max() < 1e-12


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_eager_attention_agrees_to_its_float32_softmax(family: str) -> None:
    model = tiny_lora(family, attention="eager")
    batch = make_batch(LENGTHS, width=16)
    grads, _ = per_example_grads(model, batch)
    ref, _ = per_example_grads_loop(model, batch)
    assert (grads - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_every_lora_factor_gets_its_own_gradient() -> None:
    model = tiny_lora("llama", targets=ALL)
    grads, _ = per_example_grads(model, make_batch(LENGTHS))
    ref, _ = per_example_grads_loop(model, make_batch(LENGTHS))
    assert (grads - ref).abs().max() < 1e-10
    offset = 0
    for name, param in lora_parameters(model):
        piece = grads[:, offset:offset + param.numel()]
        assert piece.abs().max() > 0, f"{name} got no gradient"
        offset += param.numel()
    assert offset == grads.shape[1]


def test_losses_are_example_losses_of_a_plain_forward() -> None:
    model = tiny_lora("qwen2")
    batch = make_batch(LENGTHS)
    _, losses = per_example_grads(model, batch)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(losses, example_losses(logits, batch["labels"]), rtol=0, atol=1e-12)


def test_example_losses_is_mean_answer_token_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, -100, -100, 6]])
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = [-(log_probs[0, 0, 3] + log_probs[0, 1, 4]) / 2, -log_probs[1, 3, 6]]
    assert torch.allclose(example_losses(logits, labels), torch.stack(expected), atol=1e-12)


def test_answer_positions_are_those_predicting_a_label_in_some_row() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, -100, -100], [-100, -100, -100, -100, -100, 9]])
    assert answer_positions(labels).tolist() == [1, 2, 4]


def test_lm_head_runs_on_scored_tokens_only_in_recomputed_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head sees only the N scored positions, in chunks (recomputed in the backward), never [B, T, V]."""
    from inflow.gradients import losses

    model = tiny_lora("llama")
    batch = make_batch(LENGTHS, width=16)
    scored = int((batch["labels"][:, 1:] != -100).sum())
    reference, reference_losses = per_example_grads(model, batch)
    monkeypatch.setattr(losses, "HEAD_CHUNK_BYTES", 4 * VOCAB * 9)  # 9 rows a chunk
    seen: list[tuple[int, ...]] = []
    head = model.get_base_model().lm_head
    handle = head.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        chunked, chunked_losses = per_example_grads(model, batch)
    finally:
        handle.remove()
    chunks = -(-scored // 9)
    assert len(seen) == 2 * chunks  # each chunk's forward, then its recomputation in the backward
    assert all(shape[1] == 32 and shape[0] in (9, max(scored % 9, losses.MIN_PRODUCT_ROWS)) for shape in seen)
    assert scored < len(LENGTHS) * 16
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked_losses, reference_losses, rtol=0, atol=1e-12)


def test_other_model_types_fall_back_to_logits_to_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    from inflow.gradients import losses

    model = tiny_lora("qwen2")
    batch = make_batch(LENGTHS)
    gathered, gathered_losses = per_example_grads(model, batch)
    monkeypatch.setattr(losses, "PLAIN_HEAD_MODELS", frozenset())
    kept, kept_losses = per_example_grads(model, batch)
    assert (kept - gathered).abs().max() < 1e-12 and (kept_losses - gathered_losses).abs().max() < 1e-12


@pytest.mark.parametrize("plain", [True, False])
def test_a_row_with_one_answer_token_gets_the_same_bits_alone_or_in_a_batch(monkeypatch: pytest.MonkeyPatch,
                                                                            plain: bool) -> None:
    """MKL computes products of 1-2 rows with other kernels: every LM-head product is padded to 8 rows, so a row
    with 1-3 answer tokens gets the bits it gets next to other rows (float32, one thread)."""
    from inflow.gradients import losses
    from inflow.parallel import torch_threads

    if not plain:
        monkeypatch.setattr(losses, "PLAIN_HEAD_MODELS", frozenset())
    model = tiny_lora(dtype=torch.float32, targets=ALL)
    batch = make_batch([20, 18, 21, 15], width=24)
    for b, answer in enumerate([1, 2, 9, 3]):  # answers of 1, 2, 9 and 3 tokens
        length = int(batch["attention_mask"][b].sum())
        batch["labels"][b] = -100
        batch["labels"][b, length - answer:length] = batch["input_ids"][b, length - answer:length]
    with torch_threads(1):
        together = per_example_grads(model, batch)[0]
        for b in range(4):
            alone = per_example_grads(model, {k: v[b:b + 1] for k, v in batch.items()})[0]
            assert torch.equal(alone[0], together[b]), b


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep`` (as some custom models): full logits are used."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False):  # noqa: ANN201
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_models_without_logits_to_keep_get_the_same_gradients() -> None:
    model = tiny_lora("qwen2")
    batch = make_batch(LENGTHS)
    kept, kept_losses = per_example_grads(model, batch)
    full, full_losses = per_example_grads(_NoLogitsToKeep(model), batch)
    assert (kept - full).abs().max() < 1e-12 and (kept_losses - full_losses).abs().max() < 1e-12


def test_an_example_batched_or_alone_has_the_same_gradient() -> None:
    model = tiny_lora("llama")
    batch = make_batch(LENGTHS, width=20)
    together, _ = per_example_grads(model, batch)
    for b, length in enumerate(LENGTHS):
        alone, _ = per_example_grads(model, {k: v[b:b + 1, :length] for k, v in batch.items()})
        assert (together[b] - alone[0]).abs().max() < 1e-10


def test_padding_tokens_do_not_leak_into_gradients() -> None:
    model = tiny_lora("llama")
    batch = make_batch(LENGTHS, width=18)
    noisy = dict(batch, input_ids=torch.where(batch["attention_mask"] == 1, batch["input_ids"], 42))
    clean_grads, _ = per_example_grads(model, batch)
    noisy_grads, _ = per_example_grads(model, noisy)
    assert (clean_grads - noisy_grads).abs().max() < 1e-12


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_causal_only_runs_without_the_padding_mask_and_changes_nothing(family: str) -> None:
    """Right padding makes the mask redundant under causal attention: the decoder runs without it (SDPA's causal
    path) and the gradients and losses are still the unpadded reference loop's; padded tokens still do not leak."""
    model = tiny_lora(family)
    batch = make_batch(LENGTHS, width=18)
    masks: list = []
    hook = model.get_base_model().model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True)
    try:
        grads, losses = per_example_grads(model, batch, causal_only=True)
        per_example_grads(model, batch)
    finally:
        hook.remove()
    assert masks[0] is None and torch.equal(masks[1], batch["attention_mask"])  # dropped only when asked
    ref_grads, ref_losses = per_example_grads_loop(model, batch)
    assert (grads - ref_grads).abs().max() < 1e-10 and (losses - ref_losses).abs().max() < 1e-12
    noisy = dict(batch, input_ids=torch.where(batch["attention_mask"] == 1, batch["input_ids"], 42))
    assert (per_example_grads(model, noisy, causal_only=True)[0] - grads).abs().max() < 1e-12


def test_float32_model_matches_the_loop() -> None:
    model = tiny_lora("qwen2", dtype=torch.float32)
    batch = make_batch(LENGTHS)
    grads, _ = per_example_grads(model, batch)
    ref, _ = per_example_grads_loop(model, batch)
    assert grads.dtype == torch.float32
    assert (grads - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_runs_in_eval_mode_and_restores_each_module_mode() -> None:
    model = tiny_lora("llama")
    model.train()
    frozen = model.base_model.model.model.embed_tokens
    frozen.eval()  # a module with its own mode must get it back
    batch = make_batch(LENGTHS)
    grads, _ = per_example_grads(model, batch)
    assert model.training and not frozen.training
    assert all(m.training for n, m in model.named_modules() if n.endswith("lora_dropout.default"))
    again, _ = per_example_grads(model, batch)
    assert torch.equal(grads, again)  # dropout was off both times
    model.eval()
    per_example_grads(model, batch)
    assert not model.training


def test_leaves_no_hooks_and_no_parameter_grads() -> None:
    model = tiny_lora("llama")
    per_example_grads(model, make_batch(LENGTHS))
    assert all(p.grad is None for _, p in lora_parameters(model))
    assert all(not m._forward_hooks for m in model.modules())


def test_all_masked_example_is_an_error() -> None:
    model = tiny_lora("llama")
    batch = make_batch(LENGTHS)
    batch["labels"][2] = -100
    with pytest.raises(ValueError, match=r"rows \[2\] have no answer token"):
        per_example_grads(model, batch)


def test_left_padding_is_refused() -> None:
    model = tiny_lora("llama")
    batch = make_batch(LENGTHS)
    batch["attention_mask"] = batch["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        per_example_grads(model, batch)


def test_trainable_parameters_outside_lora_linears_are_named() -> None:
    model = tiny_lora("llama", modules_to_save=["lm_head"])
    with pytest.raises(InflowError, match="modules_to_save.*lm_head|lm_head.*modules_to_save"):
        per_example_grads(model, make_batch(LENGTHS))


def test_dora_is_refused() -> None:
    model = tiny_lora("llama", use_dora=True)
    with pytest.raises(InflowError, match="DoRA"):
        per_example_grads(model, make_batch(LENGTHS))


@pytest.mark.slow
def test_longer_batch_float64_parity() -> None:
    model = tiny_lora("llama", targets=ALL, seed=3)
    lengths = [int(8 + 50 * abs(math.sin(i))) for i in range(12)]
    batch = make_batch(lengths, seed=5)
    grads, _ = per_example_grads(model, batch)
    ref, _ = per_example_grads_loop(model, batch)
    assert (grads - ref).abs().max() < 1e-10


def test_concurrent_calls_on_one_model_match_sequential_calls() -> None:
    """Prefect maps chunks over a thread pool sharing one model: the hooks must not see another call's batch."""
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_lora()
    batches = [make_batch([5, 9, 12][: 1 + i % 3], seed=i) for i in range(6)]  # batch sizes 1, 2, 3, 1, 2, 3
    sequential = [per_example_grads(model, b)[0] for b in batches]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda b: per_example_grads(model, b)[0], batches))
    for seq, conc in zip(sequential, concurrent):
        assert torch.equal(seq, conc)


def test_concurrent_calls_on_one_model_give_the_serial_bits_and_restore_train_mode() -> None:
    """Several threads extract from one model at once (a CPU runs one batch per core): each call's hooks see only
    its own forward, the bits equal serial calls, and eval mode is held until the last call ends."""
    from concurrent.futures import ThreadPoolExecutor

    from inflow.parallel import torch_threads

    model = tiny_lora(dtype=torch.float32, targets=ALL)
    model.train()
    batches = [make_batch(LENGTHS, width=16, seed=seed) for seed in range(8)]
    with torch_threads(1):
        serial = [per_example_grads(model, batch)[0] for batch in batches]
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(lambda batch: per_example_grads(model, batch)[0], batches))
    assert all(torch.equal(a, b) for a, b in zip(serial, concurrent))
    assert model.training and all(m.training for m in model.modules())  # restored by the last call
