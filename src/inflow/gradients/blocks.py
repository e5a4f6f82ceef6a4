"""The LoRA parameters of a model, in the one order every flat gradient uses, grouped into sketch blocks.

A flat gradient ``[B, D]`` is the concatenation of the flattened gradients of :func:`lora_parameters`,
in ``model.named_parameters()`` order. :func:`lora_blocks` cuts that vector into contiguous blocks, one
per transformer layer (the ``layers.<i>.`` part of a parameter name); the block-diagonal sketch
(DESIGN §4) projects each block on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from inflow.errors import InflowError

# ``...layers.<i>.``: the prefix up to the layer index names one transformer layer.
_LAYER = re.compile(r"^(?:(.*)\.)?layers\.(\d+)\.")
OTHER = "other"


@dataclass(frozen=True)
class GradBlock:
    """One contiguous slice of the flat LoRA gradient.

    ``name`` is ``layers.<i>`` (or ``other`` for parameters outside any layer), ``param_names`` the
    parameters it holds in flat order, ``size`` their total number of elements (D_b).
    """

    name: str
    param_names: tuple[str, ...]
    size: int


def lora_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable (``requires_grad``) parameters of ``model`` in ``named_parameters()`` order.

    For a peft LoRA model these are the ``lora_A``/``lora_B`` weights; D = sum of their ``numel()``.
    """
    return [(name, param) for name, param in model.named_parameters() if param.requires_grad]


def _layer_key(name: str) -> tuple[str, str] | None:
    """``(full prefix, "layers.<i>")`` for a parameter inside a transformer layer, else None."""
    match = _LAYER.match(name)
    if match is None:
        return None
    prefix = match.group(0)[:-1]  # without the trailing dot
    return prefix, f"layers.{match.group(2)}"


def lora_blocks(model: torch.nn.Module) -> list[GradBlock]:
    """Group :func:`lora_parameters` by transformer layer, blocks in order of first appearance.

    Concatenating the blocks' parameters gives back exactly the flat order, so block b covers the
    slice ``[offset_b, offset_b + size_b)`` of a flat gradient with ``offset_b = sum_{c<b} size_c``.
    Where a model has two stacks whose layers share a short name (``layers.0`` of a vision tower and of
    the language model), blocks are named by their full prefix instead.
    """
    params = lora_parameters(model)
    if not params:
        raise InflowError("the model has no trainable parameters; wrap it with LoRA "
                          "(inflow.models.loading.apply_lora) or load an adapter with is_trainable=True")
    keys: list[str] = []
    short: dict[str, str] = {}
    for name, _ in params:
        key = _layer_key(name)
        if key is None:
            keys.append(OTHER)
        else:
            keys.append(key[0])
            short[key[0]] = key[1]
    groups: dict[str, list[tuple[str, int]]] = {}
    for key, (name, param) in zip(keys, params):
        groups.setdefault(key, []).append((name, param.numel()))
    _check_contiguous(keys)
    clash = len(set(short.values())) < len(short)
    blocks = [
        GradBlock(name=key if (clash or key == OTHER) else short[key],
                  param_names=tuple(name for name, _ in members),
                  size=sum(size for _, size in members))
        for key, members in groups.items()
    ]
    flat = [name for block in blocks for name in block.param_names]
    assert flat == [name for name, _ in params], "blocks must tile the flat LoRA order"
    return blocks


def _check_contiguous(keys: list[str]) -> None:
    """Each block's parameters must form one run in flat order, or slicing a flat gradient breaks."""
    seen: set[str] = set()
    previous = None
    for key in keys:
        if key != previous and key in seen:
            raise InflowError(
                f"trainable parameters of block {key!r} are not contiguous in named_parameters() order "
                "(e.g. LoRA on both embed_tokens and lm_head, which sit before and after the layers); "
                "restrict lora.target_modules to modules inside the transformer layers")
        seen.add(key)
        previous = key


def keep_blocks(model: torch.nn.Module, kept: list[int]) -> list[GradBlock]:
    """Freeze (``requires_grad_(False)``) the LoRA parameters of every block of :func:`lora_blocks` not in ``kept``
    (block indices), so per-example gradients, their blocks and the sketch cover the kept blocks only, and the
    backward pass stops below the lowest kept layer. Returns the kept blocks."""
    blocks = lora_blocks(model)
    dropped = {name for b, block in enumerate(blocks) if b not in kept for name in block.param_names}
    for name, param in model.named_parameters():
        if name in dropped:
            param.requires_grad_(False)
    return [blocks[b] for b in sorted(kept)]
