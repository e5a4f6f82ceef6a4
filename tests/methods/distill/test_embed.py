"""JVP embeddings: forward-mode derivatives against central finite differences in float64, independence from the
batch a row is in, seeded tangents, the embedded position, and clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from inflow.data.batching import IGNORE_INDEX
from inflow.errors import InflowError
from inflow.methods.distill import (block_parameters, embedding_positions, jvp_embeddings, tangent_directions,
                                    truncated_backbone)

SIZES = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _model(family: str = "llama", attn: str = "eager") -> torch.nn.Module:
    torch.manual_seed(0)
    config = (LlamaConfig if family == "llama" else Qwen2Config)(**SIZES)
    config._attn_implementation = attn
    model = (LlamaForCausalLM if family == "llama" else Qwen2ForCausalLM)(config)
    return model.double().eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three right-padded rows of lengths 7, 4, 6 (pad id 0)."""
    g = torch.Generator().manual_seed(1)
    lengths = [7, 4, 6]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 50, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask, torch.tensor([5, 3, 4])


@torch.no_grad()
def _hidden(model, params, ids, mask, positions, n_blocks) -> torch.Tensor:
    view = truncated_backbone(model, n_blocks)
    out = torch.func.functional_call(view, params, (ids,), {"attention_mask": mask, "use_cache": False})
    return out.last_hidden_state[torch.arange(len(ids)), positions]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_jvp_equals_central_finite_differences(family: str) -> None:
    model = _model(family)
    ids, mask, positions = _batch()
    params = block_parameters(model, 2)
    tangents = tangent_directions(params, 2, seed=7)
    emb = jvp_embeddings(model, ids, mask, positions, tangents, n_blocks=2)
    assert emb.shape == (3, 2 * SIZES["hidden_size"]) and emb.dtype == torch.float64
    # HF's RMSNorm computes in float32 even in a float64 model, so the step cannot be tiny: 3e-5 balances the
    # O(eps^2) truncation error (Gaussian directions over every weight bend h strongly) against that rounding
    eps = 3e-5
    for k, tangent in enumerate(tangents):
        plus = {n: p + eps * tangent[n] for n, p in params.items()}
        minus = {n: p - eps * tangent[n] for n, p in params.items()}
        fd = (_hidden(model, plus, ids, mask, positions, 2) - _hidden(model, minus, ids, mask, positions, 2)) / (2 * eps)
        block = emb[:, k * SIZES["hidden_size"]:(k + 1) * SIZES["hidden_size"]]
        assert fd.abs().max() > 1e-3  # a real derivative, so the comparison can fail
        torch.testing.assert_close(block, fd, rtol=1e-3, atol=1e-4 * float(fd.abs().max()))


def test_rows_do_not_depend_on_their_batch_and_later_blocks_do_not_matter() -> None:
    model = _model()
    ids, mask, positions = _batch()
    tangents = tangent_directions(block_parameters(model, 2), 3, seed=0)
    together = jvp_embeddings(model, ids, mask, positions, tangents, n_blocks=2)
    for i in range(3):
        n = int(mask[i].sum())
        alone = jvp_embeddings(model, ids[i:i + 1, :n], mask[i:i + 1, :n], positions[i:i + 1], tangents, 2)
        torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the third block is not part of the embedding
        model.model.layers[2].mlp.down_proj.weight.mul_(3.0)
    torch.testing.assert_close(jvp_embeddings(model, ids, mask, positions, tangents, 2), together)


def test_tangents_are_seeded_and_shaped_like_the_parameters() -> None:
    params = block_parameters(_model(), 1)
    assert all(name.startswith("layers.0.") for name in params)
    a, b = tangent_directions(params, 2, seed=3), tangent_directions(params, 2, seed=3)
    c = tangent_directions(params, 1, seed=4)
    for name, p in params.items():
        assert a[0][name].shape == p.shape and a[0][name].dtype == p.dtype
        assert torch.equal(a[0][name], b[0][name]) and torch.equal(a[1][name], b[1][name])
        assert not torch.equal(a[0][name], a[1][name]) and not torch.equal(a[0][name], c[0][name])


def test_position_is_the_last_answer_token_else_the_last_token() -> None:
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, 2:4] = 5
    labels[2, 5] = 9
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1] * 6])
    assert embedding_positions(labels, mask).tolist() == [3, 2, 5]


def test_errors_name_the_fix() -> None:
    with pytest.raises(InflowError, match="eager attention"):
        truncated_backbone(_model(attn="sdpa"), 1)
    with pytest.raises(InflowError, match="distill.embed_blocks is 4, but the model has 3 blocks"):
        truncated_backbone(_model(), 4)
