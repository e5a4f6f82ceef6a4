"""Loading checkpoints: the dtype asked for, SDPA attention unless eager is asked for, float32 LoRA on any base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.config import LoraConfig
from inflow.errors import InflowError
from inflow.models.loading import apply_lora, load_causal_lm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def test_sdpa_attention_and_float32_by_default(model_dir: Path) -> None:
    model = load_causal_lm(model_dir)
    assert model.config._attn_implementation == "sdpa"
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_eager_attention_on_request_gives_the_same_logits(model_dir: Path) -> None:
    eager = load_causal_lm(model_dir, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    ids = torch.tensor([[1, 5, 7, 9, 3]])
    torch.testing.assert_close(eager(input_ids=ids).logits, load_causal_lm(model_dir)(input_ids=ids).logits)


def test_bfloat16_base_keeps_float32_lora_weights(model_dir: Path) -> None:
    model = apply_lora(load_causal_lm(model_dir, dtype=torch.bfloat16), LoraConfig(r=2, target_modules=("q_proj",)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in frozen)


def test_a_directory_without_a_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InflowError, match="dvc repro base"):
        load_causal_lm(tmp_path)


def _lora_llama(tied: bool) -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=tied,
                      attn_implementation="sdpa")
    model = apply_lora(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=("q_proj", "v_proj")))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero after peft's init: every lora_A gradient would be zero
                param.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_frozen_linears_cast_once_give_the_same_bits_under_autocast(tied: bool) -> None:
    import copy

    from inflow.gradients.per_example import per_example_grads
    from inflow.models.loading import cast_frozen_linears

    model = _lora_llama(tied)
    cast = copy.deepcopy(model)
    before = {name: p.dtype for name, p in cast.named_parameters()}
    freed = cast_frozen_linears(cast, torch.bfloat16)
    after = dict(cast.named_parameters())
    changed = {name for name in before if after[name].dtype != before[name]}
    base_linears = {name for name in before if name.endswith("base_layer.weight")
                    or any(name.endswith(f"{m}.weight") for m in ("k_proj", "o_proj", "gate_proj", "up_proj",
                                                                   "down_proj"))}
    head = set() if tied else {"base_model.model.lm_head.weight"}
    assert changed == base_linears | head and len(base_linears) == 2 * 7
    assert all(after[n].dtype == torch.bfloat16 for n in changed)
    assert all(p.dtype == torch.float32 for n, p in after.items() if "lora_" in n or "norm" in n or "embed" in n)
    assert freed == sum(after[n].numel() * 2 for n in changed)
    if tied:  # the head still shares the embeddings' float32 weight
        assert cast.get_output_embeddings().weight is cast.get_input_embeddings().weight

    ids = torch.randint(3, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.where(torch.arange(9) >= 4, ids, -100).masked_fill(mask == 0, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, want_loss = per_example_grads(model, batch)
        got, got_loss = per_example_grads(cast, batch)
    assert torch.equal(got, want) and torch.equal(got_loss, want_loss)
    assert want.abs().sum() > 0
    with torch.no_grad(), pytest.raises(RuntimeError, match="dtype"):  # only autocast runs the cast model
        cast(input_ids=ids)


def test_trainable_and_float64_weights_are_left_alone() -> None:
    from inflow.models.loading import cast_frozen_linears

    model = _lora_llama(tied=False).double()
    assert cast_frozen_linears(model, torch.bfloat16) == 0
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    plain[1].requires_grad_(False)
    assert cast_frozen_linears(plain, torch.float16) == (4 * 2 + 2) * 2
    assert plain[0].weight.dtype == torch.float32
    assert plain[1].weight.dtype == plain[1].bias.dtype == torch.float16
