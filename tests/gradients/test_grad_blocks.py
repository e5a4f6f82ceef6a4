"""LoRA parameter order and per-layer blocks."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.errors import InflowError
from inflow.gradients.blocks import GradBlock, lora_blocks, lora_parameters


def tiny_lora(targets: list[str], layers: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(config), lora)


def test_lora_parameters_are_the_trainable_ones_in_named_order() -> None:
    model = tiny_lora(["q_proj", "v_proj"])
    params = lora_parameters(model)
    expected = [name for name, p in model.named_parameters() if p.requires_grad]
    assert [name for name, _ in params] == expected
    assert len(params) == 3 * 2 * 2  # layers x modules x (A, B)
    assert all("lora_" in name for name, _ in params)


def test_blocks_are_layers_in_order_and_tile_the_flat_gradient() -> None:
    model = tiny_lora(["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    blocks = lora_blocks(model)
    params = lora_parameters(model)
    assert [b.name for b in blocks] == ["layers.0", "layers.1", "layers.2"]
    assert [n for b in blocks for n in b.param_names] == [n for n, _ in params]
    assert sum(b.size for b in blocks) == sum(p.numel() for _, p in params)
    sizes = {n: p.numel() for n, p in params}
    for block in blocks:
        assert all(f".{block.name}." in n for n in block.param_names)
        assert block.size == sum(sizes[n] for n in block.param_names)
    assert isinstance(blocks[0], GradBlock)


def test_parameters_outside_layers_form_the_other_block() -> None:
    model = tiny_lora(["q_proj", "lm_head"], layers=2)
    blocks = lora_blocks(model)
    assert [b.name for b in blocks] == ["layers.0", "layers.1", "other"]
    assert all("lm_head" in n for n in blocks[-1].param_names)


def test_non_contiguous_other_parameters_are_refused() -> None:
    model = tiny_lora(["embed_tokens", "q_proj", "lm_head"], layers=2)
    with pytest.raises(InflowError, match="not contiguous"):
        lora_blocks(model)


def test_a_model_without_trainable_parameters_is_refused() -> None:
    model = tiny_lora(["q_proj"])
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(InflowError, match="no trainable parameters"):
        lora_blocks(model)


def test_keep_blocks_restricts_gradients_to_the_kept_layers() -> None:
    from inflow.gradients.blocks import keep_blocks
    from inflow.gradients.per_example import per_example_grads

    model = tiny_lora(["q_proj", "v_proj"], layers=3)
    with torch.no_grad():
        for _, param in lora_parameters(model):
            param.normal_(0.0, 0.2)
    ids = torch.randint(1, 97, (3, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    full, _ = per_example_grads(model, batch)
    blocks = lora_blocks(model)
    kept = keep_blocks(model, [2, 1])
    assert [b.name for b in kept] == [b.name for b in lora_blocks(model)] == [blocks[1].name, blocks[2].name]
    only, _ = per_example_grads(model, batch)
    torch.testing.assert_close(only, full[:, blocks[0].size:], rtol=1e-4, atol=1e-6)
