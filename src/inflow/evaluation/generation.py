"""Greedy generation for exact match: the token budget (``evaluate.max_new_tokens``) and left-padded batches.

The budget: ``evaluate.max_new_tokens: 0`` (auto) is the longest reference answer of the split in tokens plus
:data:`AUTO_MARGIN`; a positive setting is used as is, with a warning counting the answers it cannot hold.
Answers are counted as :func:`inflow.data.render.encode_prompt_answer` tokenizes them (on their own, no special
tokens), i.e. the tokens a perfect model would generate.

Batches are left-padded with :func:`inflow.models.tokenizer.pad_token_id` (the pad token, else EOS: Llama's
tokenizers have no pad token); the attention mask hides the padding, so a prompt's generation does not
depend on its batch neighbours or on which id pads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from inflow.devices import autocast
from inflow.models.tokenizer import pad_token_id

log = logging.getLogger(__name__)

AUTO_MARGIN = 3
"""Tokens added to the longest answer in auto mode: one for EOS, two for a generation that spells the answer in
more tokens than its reference tokenization."""


def answer_lengths(tokenizer: PreTrainedTokenizerBase, answers: Sequence[str]) -> list[int]:
    """The token count of every reference answer (encoded alone, no special tokens, as the labels are)."""
    return [len(tokenizer.encode(answer, add_special_tokens=False)) for answer in answers]


def generation_budget(lengths: Sequence[int], max_new_tokens: int, task: str = "") -> int:
    """The ``max_new_tokens`` of generation for answers of ``lengths`` tokens.

    ``max_new_tokens == 0`` (auto): ``max(lengths) + AUTO_MARGIN``. A positive value is returned as is; when
    some answers are longer, a warning names how many cannot be produced in full (they count as misses).
    """
    if not lengths:
        raise ValueError("generation_budget needs at least one answer length")
    longest = max(lengths)
    if max_new_tokens == 0:
        return longest + AUTO_MARGIN
    too_long = sum(length > max_new_tokens for length in lengths)
    if too_long:
        log.warning("%s%d of %d test answers are longer than evaluate.max_new_tokens=%d tokens (the longest has "
                    "%d): they cannot be generated in full and count as misses; set evaluate.max_new_tokens: 0 "
                    "(auto) or at least %d", f"{task}: " if task else "", too_long, len(lengths), max_new_tokens,
                    longest, longest + 1)
    return max_new_tokens


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[B, T]`` (int64, CPU), prompts aligned to the right edge."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int], eos_id: int) -> str:
    """The generated text up to (not including) the first EOS."""
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
                     batch_size: int, max_new_tokens: int, device: torch.device | None = None,
                     dtype: torch.dtype | None = None) -> list[str]:
    """Greedy continuation of every prompt (token ids, BOS included), up to EOS or ``max_new_tokens`` tokens.

    Runs on ``device`` (default: the model's) under autocast to ``dtype`` (None: float32); returns the decoded
    texts in prompt order, special tokens removed.
    """
    device = device or next(model.parameters()).device
    pad_id, eos_id = pad_token_id(tokenizer), int(tokenizer.eos_token_id)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start:start + batch_size], pad_id)
        with autocast(device, dtype):
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                 eos_token_id=eos_id)
        out.extend(_decode(tokenizer, row, eos_id) for row in gen[:, ids.shape[1]:].tolist())
    return out
