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

