"""JVP embeddings of Influence Distillation (Nikdan et al. 2025; DESIGN §6): cheap per-row features that place
similar rows close together, so exact influence computed for a few landmark rows can be propagated to the rest.

For a model with parameters θ, the first ``n_blocks`` transformer blocks (the head and later blocks removed)
map a row x to hidden states h(x; θ) ``[T, hidden]``; we take the state at one position t(x) (the row's last
answer-relevant token). With K random Gaussian directions v_1..v_K over those blocks' parameters (fixed by a
seed, shared by every row), the embedding is the forward-mode directional derivative

    e(x) = [ J_θ h_t(x) v_1 ; ... ; J_θ h_t(x) v_K ]   ∈ R^{K · hidden}

computed with ``torch.func.jvp`` for a whole batch at once, vmapped over the K tangents (one primal forward, the K
tangent computations batched; never one row at a time). It costs about 1 + K forward passes of ``n_blocks`` blocks,
against a forward and a backward of the whole model (and per-example outer products) for a gradient feature.
Forward-mode AD goes through the model's own attention code, so the model must be loaded with eager attention
(``load_causal_lm(path, attn_implementation="eager")``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from inflow.data.batching import IGNORE_INDEX
from inflow.errors import InflowError


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder stack of a causal LM (``model.model`` of Llama/Qwen2/Mistral; through a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, "model", None)
    if backbone is None or not hasattr(backbone, "layers"):
        raise InflowError(f"{type(base).__name__} has no `.model.layers` decoder stack; JVP embeddings support "
                          "Llama-style causal LMs (Llama, Qwen2, Mistral)")
    return backbone


def truncated_backbone(model: nn.Module, n_blocks: int) -> nn.Module:
    """A view of the decoder stack that runs only its first ``n_blocks`` blocks (then the final norm).

    The view shares every parameter and submodule with ``model``; only its config says fewer layers.
    """
    backbone = backbone_of(model)
    if getattr(backbone.config, "_attn_implementation", "eager") != "eager":
        raise InflowError("JVP embeddings need eager attention (forward-mode AD): load the model with "
                          "attn_implementation='eager'")
    if not 1 <= n_blocks <= len(backbone.layers):
        raise InflowError(f"distill.embed_blocks is {n_blocks}, but the model has {len(backbone.layers)} blocks: "
                          f"choose 1..{len(backbone.layers)}")
    view = copy.copy(backbone)  # shallow: same parameters and submodules, own attribute dict
    view.config = copy.copy(backbone.config)
    view.config.num_hidden_layers = n_blocks
    return view


def block_parameters(model: nn.Module, n_blocks: int) -> dict[str, Tensor]:
    """The parameters of the first ``n_blocks`` blocks, named relative to the decoder stack, in module order."""
    layers = backbone_of(model).layers
    return {f"layers.{i}.{name}": p for i in range(n_blocks) for name, p in layers[i].named_parameters()}


def tangent_directions(params: dict[str, Tensor], n_tangents: int, seed: int) -> list[dict[str, Tensor]]:
    """``n_tangents`` standard Gaussian directions over ``params``, each a dict shaped like ``params``.

    Drawn on the CPU in float64 from one seeded generator, in the dict's order, then cast to each parameter's
    dtype and device: the same directions for every row, batch, process and device.
    """
    generator = torch.Generator().manual_seed(seed)
    return [{name: torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype).to(p.device)
             for name, p in params.items()} for _ in range(n_tangents)]


def embedding_positions(labels: Tensor, attention_mask: Tensor) -> Tensor:
    """Per row of a right-padded batch, the position of its last labelled (answer) token, else its last token.

    ``labels``, ``attention_mask`` ``[B, T]`` -> ``[B]`` int64.
    """
    T = labels.shape[1]
    index = torch.arange(T, device=labels.device).expand_as(labels)
    last_label = torch.where(labels != IGNORE_INDEX, index, -1).amax(dim=1)
    last_token = torch.where(attention_mask.bool(), index, -1).amax(dim=1)
    return torch.where(last_label >= 0, last_label, last_token)


def jvp_embeddings(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, positions: Tensor,
                   tangents: list[dict[str, Tensor]], n_blocks: int) -> Tensor:
    """e(x) for every row of a batch: ``[B, K * hidden]`` in the model's dtype (see the module docstring).

    ``input_ids``, ``attention_mask`` ``[B, T]`` (right padding: causal attention keeps each row's states
    independent of the padding after it); ``positions`` ``[B]`` the token whose hidden state is differentiated;
    ``tangents``: K dicts over :func:`block_parameters`. The model should be in eval mode (dropout off).
    """
    view = truncated_backbone(model, n_blocks)
    primals = block_parameters(model, n_blocks)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)

    def hidden(params: dict[str, Tensor]) -> Tensor:
        out = torch.func.functional_call(view, params, (input_ids,), {"attention_mask": attention_mask,
                                                                       "use_cache": False})
        return out.last_hidden_state[rows, positions]  # [B, hidden]

    def derivative(tangent: dict[str, Tensor]) -> Tensor:
        return torch.func.jvp(hidden, (primals,), (tangent,))[1]

    # all K tangents in one pass: vmap batches the tangent computations and shares the primal forward (about twice
    # as fast as K separate jvp calls at K = 2, same bytes)
    stacked = {name: torch.stack([t[name] for t in tangents]) for name in primals}
    with torch.no_grad():  # forward mode only: no graph is kept
        derivatives = torch.func.vmap(derivative)(stacked)  # [K, B, hidden]
    return torch.cat(list(derivatives), dim=1)
