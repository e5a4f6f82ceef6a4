"""Padding with any id: pad-less tokenizers (Llama-2/3) pad with EOS and nothing they compute changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inflow.data.batching import IGNORE_INDEX, Encoded, collate

EXAMPLES = [Encoded([1, 5, 6, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 6, 7, 8]), Encoded([1, 9, 4], [IGNORE_INDEX, 9, 4])]


@pytest.mark.parametrize("bad", [None, -1, 2.0, True, "0"])
def test_collate_rejects_a_missing_or_invalid_pad_id(bad: object) -> None:
    with pytest.raises(ValueError, match="pad_token_id"):
        collate(EXAMPLES, pad_id=bad)  # type: ignore[arg-type]


def test_collate_accepts_numpy_ints() -> None:
    assert collate(EXAMPLES, pad_id=np.int64(2))["input_ids"][1].tolist() == [1, 9, 4, 2, 2]


def test_real_positions_and_loss_do_not_depend_on_the_pad_id() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config).eval()
    outputs = []
    for pad_id in (0, 2, 15):  # a pad token, EOS, any id
        batch = collate(EXAMPLES, pad_id=pad_id)
        with torch.no_grad():
            out = model(**batch)
        outputs.append((out.logits[0], out.logits[1, :3], out.loss))
    for logits_0, logits_1, loss in outputs[1:]:
        torch.testing.assert_close(logits_0, outputs[0][0])
        torch.testing.assert_close(logits_1, outputs[0][1])
        torch.testing.assert_close(loss, outputs[0][2])
