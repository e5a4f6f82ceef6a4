"""Tokenized examples, padding them into batches, and grouping examples into batches.

``Encoded`` is the one tokenized-example type every module speaks (training, gradients, evaluation).
``collate`` right-pads a batch to its longest example with any pad id (padding is masked; tokenizers
without a pad token pad with EOS: :func:`inflow.models.tokenizer.pad_token_id`). ``length_batches`` groups
examples of similar length so per-example gradient extraction wastes little compute on padding;
``sequential_batches`` keeps the input order (what a reference loop or a resumable chunked writer wants);
``token_batches`` fills batches up to a token budget, every row padded to its own :func:`bucket_width`, so what
is computed for a row does not depend on which rows share its batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100  # label of a token that is not scored (prompt, role markers, padding)


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ``input_ids`` and ``labels`` of equal length T.

    ``labels[t]`` is ``input_ids[t]`` on answer tokens and ``IGNORE_INDEX`` everywhere else. Lists are
    accepted and stored as tuples, so an ``Encoded`` is immutable and hashable.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    example_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_ids", tuple(int(t) for t in self.input_ids))
        object.__setattr__(self, "labels", tuple(int(t) for t in self.labels))
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"example {self.example_id!r}: {len(self.input_ids)} input ids but "
                             f"{len(self.labels)} labels; they must have the same length")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        """Number of scored (answer) tokens."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def collate(examples: Sequence[Encoded], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad ``examples`` to the longest one (or to ``width``, at least that long).

    Returns ``input_ids`` [B, T] (padding = ``pad_id``), ``attention_mask`` [B, T] (1 on real tokens,
    0 on padding) and ``labels`` [B, T] (``IGNORE_INDEX`` on padding); all int64 on the CPU.

    Padding is masked twice (attention mask 0, label ``IGNORE_INDEX``), and right padding sits after every
    real token, so a causal model's outputs at real positions and every loss are independent of ``pad_id``:
    any vocabulary id works, and tokenizers without a pad token (Llama-2/3) pad with EOS. Take the id from
    :func:`inflow.models.tokenizer.pad_token_id` (pad token, else EOS), never ``tokenizer.pad_token_id``
    directly, which is None for such tokenizers.
    """
    if not examples:
        raise ValueError("collate got an empty batch")
    if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral) or pad_id < 0:
        raise ValueError(f"collate needs a token id >= 0 to pad with, got {pad_id!r}; a tokenizer without a pad "
                         "token gives None: pass inflow.models.tokenizer.pad_token_id(tokenizer) (pad, else EOS)")
    longest = max(len(e) for e in examples)
    if width is None:
        width = longest
    elif width < longest:
        raise ValueError(f"cannot pad to width {width}: the batch has an example of {longest} tokens")
    input_ids = torch.full((len(examples), width), int(pad_id), dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    """Indices ``0..n-1`` cut in order into batches of ``batch_size`` (the last one may be shorter)."""
    _check_batch_size(batch_size)
    return [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]


def length_batches(lengths: Sequence[int], batch_size: int, shuffle_seed: int | None = None) -> list[list[int]]:
    """Group indices ``0..len(lengths)-1`` into batches of similar length; every index appears once.

    Indices are sorted by (length, index) and cut into consecutive batches of ``batch_size``, so a batch
    pads to little more than its shortest member. Within a batch, indices are ascending. Batch order:
    shuffled with ``numpy.random.default_rng(shuffle_seed)`` when a seed is given (training), otherwise
    ascending by each batch's first index, so the output is a pure function of ``lengths``.
    """
    _check_batch_size(batch_size)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [sorted(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
    if shuffle_seed is None:
        batches.sort(key=lambda batch: batch[0])
        return batches
    permutation = np.random.default_rng(shuffle_seed).permutation(len(batches))
    return [batches[i] for i in permutation]


def bucket_width(length: int) -> int:
    """The padded width of a row of ``length`` tokens in :func:`token_batches`: a function of the length alone.

    ``length`` rounded up to a multiple of ``max(8, 2**(bit_length(length) - 4))`` (at most 1/8 wasted on
    padding; 8 widths per octave), and 8 more when that leaves no padding: every row has a padding token, so
    every batch has a padding mask. A batch without padding takes another attention path in transformers (the
    mask is dropped and SDPA runs causal-only), whose float summation order differs, so without that rule a row
    of exactly a ladder length would get other bits alone than next to a shorter row.
    """
    if length < 1:
        raise ValueError(f"a row needs at least one token, got length {length}")
    step = max(8, 1 << max(length.bit_length() - 4, 0))
    width = -(-length // step) * step
    return width + 8 if width == length else width


def token_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Batches of rows that share a :func:`bucket_width`, each at most ``batch_tokens`` padded tokens.

    Rows are sorted by (width, index); each width's rows are cut in that order into batches of
    ``max(1, batch_tokens // width)`` rows (a row wider than the budget is a batch of its own). Batches come
    in that order too, so concatenated they list the rows in the same order whatever the budget: a pure
    function of ``lengths`` and ``batch_tokens``. Pad each batch with ``collate(..., width=bucket_width(...))``.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be at least 1, got {batch_tokens}")
    widths = [bucket_width(n) for n in lengths]
    order = sorted(range(len(lengths)), key=lambda i: (widths[i], i))
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        if last and widths[last[0]] == widths[i] and (len(last) + 1) * widths[i] <= batch_tokens:
            last.append(i)
        else:
            batches.append([i])
    return batches
