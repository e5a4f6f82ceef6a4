"""A model prepared to run only under autocast: 16-bit frozen weights and no LoRA input casts give the float32
model's bits; shared input casts give its forward bits and gradients as close as bfloat16 allows."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.config import LoraConfig
from inflow.gradients.per_example import per_example_grads
from inflow.models.autocast import autocast_only, cast_frozen_linears, share_input_casts
from inflow.models.loading import apply_lora

TARGETS = ("q_proj", "v_proj", "o_proj")


def _lora_llama(tied: bool) -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=tied,
                      attn_implementation="sdpa")
    model = apply_lora(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=TARGETS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero after peft's init: every lora_A gradient would be zero
                param.normal_(0.0, 0.1)
    return model


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 40, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.where(torch.arange(9) >= 4, ids, -100).masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model: torch.nn.Module, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return per_example_grads(model, _batch())


@pytest.mark.parametrize("tied", [True, False])
def test_frozen_linears_cast_once_give_the_same_bits_under_autocast(tied: bool) -> None:
    model = _lora_llama(tied)
    cast = copy.deepcopy(model)
    before = {name: p.dtype for name, p in cast.named_parameters()}
    freed = cast_frozen_linears(cast, torch.bfloat16)
    after = dict(cast.named_parameters())
    changed = {name for name in before if after[name].dtype != before[name]}
    base = {name for name in before if name.endswith("base_layer.weight")
            or any(name.endswith(f"{m}.weight") for m in ("k_proj", "gate_proj", "up_proj", "down_proj"))}
    head = set() if tied else {"base_model.model.lm_head.weight"}
    assert changed == base | head and len(base) == 2 * 7
    assert all(after[n].dtype == torch.bfloat16 for n in changed)
    assert all(p.dtype == torch.float32 for n, p in after.items() if "lora_" in n or "norm" in n or "embed" in n)
    assert freed == sum(after[n].numel() * 2 for n in changed)
    if tied:  # the head still shares the embeddings' float32 weight
        assert cast.get_output_embeddings().weight is cast.get_input_embeddings().weight

    want, want_loss = _grads(model)
    got, got_loss = _grads(cast)
    assert torch.equal(got, want) and torch.equal(got_loss, want_loss)
    assert want.dtype == torch.float32 and want.abs().sum() > 0
    with torch.no_grad(), pytest.raises(RuntimeError, match="dtype"):  # only autocast runs the cast model
        cast(input_ids=_batch()["input_ids"])


def test_trainable_and_float64_weights_are_left_alone() -> None:
    model = _lora_llama(tied=False).double()
    assert cast_frozen_linears(model, torch.bfloat16) == 0
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    plain[1].requires_grad_(False)
    assert cast_frozen_linears(plain, torch.float16) == (4 * 2 + 2) * 2
    assert plain[0].weight.dtype == torch.float32
    assert plain[1].weight.dtype == plain[1].bias.dtype == torch.float16


def test_without_shared_casts_the_float32_models_bits_are_kept() -> None:
    model = _lora_llama(tied=False)
    prepared = copy.deepcopy(model)
    autocast_only(prepared, torch.bfloat16, share_casts=False)
    assert all(not m.cast_input_dtype_enabled for m in prepared.modules() if hasattr(m, "cast_input_dtype_enabled"))
    want, want_loss = _grads(model)
    got, got_loss = _grads(prepared)
    assert torch.equal(got, want) and torch.equal(got_loss, want_loss)


def test_shared_casts_one_copy_for_every_reader_the_same_forward_and_close_gradients() -> None:
    model = _lora_llama(tied=False)
    shared = copy.deepcopy(model)
    autocast_only(shared, torch.bfloat16)
    seen: dict[str, torch.Tensor] = {}
    layer = shared.base_model.model.model.layers[0]
    readers = {"q": layer.self_attn.q_proj.base_layer, "q_A": layer.self_attn.q_proj.lora_A["default"],
               "k": layer.self_attn.k_proj, "v_A": layer.self_attn.v_proj.lora_A["default"],
               "gate": layer.mlp.gate_proj, "up": layer.mlp.up_proj}
    handles = [m.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0]))
               for key, m in readers.items()]
    want, want_loss = _grads(model)
    got, got_loss = _grads(shared)
    for handle in handles:
        handle.remove()
    assert all(x.dtype == torch.bfloat16 for x in seen.values())
    attention = {seen[k].data_ptr() for k in ("q", "q_A", "k", "v_A")}
    mlp = {seen[k].data_ptr() for k in ("gate", "up")}
    assert len(attention) == len(mlp) == 1 and attention != mlp  # one copy of each norm's output

    assert torch.equal(got_loss, want_loss)  # the forward: the same bits
    reference, _ = per_example_grads(copy.deepcopy(model).double(), _batch())
    error = lambda g: (g.double() - reference).norm(dim=1) / reference.norm(dim=1)  # noqa: E731
    assert not torch.equal(got, want)  # the backward adds in bfloat16 now
    # as close to float64 as autocast itself gets (a random 2-layer model: 1-15% per row)
    assert (error(got) <= 1.25 * error(want) + 1e-3).all(), (error(got), error(want))


def test_shared_casts_do_nothing_outside_autocast() -> None:
    model = _lora_llama(tied=True)
    hooked = copy.deepcopy(model)
    handles = share_input_casts(hooked)
    assert len(handles) == 2 * 7  # q, v, o (wrapped), k, gate, up, down per layer; not the head
    assert torch.equal(_grads(hooked, amp=False)[0], _grads(model, amp=False)[0])
