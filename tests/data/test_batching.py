"""Encoded examples, right-padding collation and length-bucketed batches."""

from __future__ import annotations

import pytest
import torch

from inflow.data.batching import (
    IGNORE_INDEX,
    Encoded,
    bucket_width,
    collate,
    length_batches,
    sequential_batches,
    token_batches,
)


def test_encoded_stores_tuples_and_checks_lengths() -> None:
    example = Encoded([1, 2, 3], [IGNORE_INDEX, 2, 3], "e")
    assert example.input_ids == (1, 2, 3) and example.labels == (-100, 2, 3)
    assert len(example) == 3 and example.n_labels == 2
    assert hash(example) == hash(Encoded((1, 2, 3), (-100, 2, 3), "e"))
    with pytest.raises(ValueError, match="same length"):
        Encoded([1, 2], [1], "bad")


def test_collate_right_pads_to_the_longest() -> None:
    batch = collate([Encoded([5, 6, 7], [-100, 6, 7]), Encoded([8], [8])], pad_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for tensor in batch.values():
        assert tensor.shape == (2, 3) and tensor.dtype == torch.long
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_collate_rejects_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([], pad_id=0)


def test_sequential_batches() -> None:
    assert sequential_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert sequential_batches(0, 3) == []
    with pytest.raises(ValueError, match="batch_size"):
        sequential_batches(3, 0)


LENGTHS = [9, 1, 5, 1, 8, 2, 9, 3, 7]


def test_length_batches_cover_every_index_once_and_group_similar_lengths() -> None:
    batches = length_batches(LENGTHS, batch_size=2)
    assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
    assert [len(b) for b in sorted(batches, key=len, reverse=True)] == [2, 2, 2, 2, 1]
    assert sorted(sorted(LENGTHS[i] for i in b) for b in batches) == [[1, 1], [2, 3], [5, 7], [8, 9], [9]]
    assert batches == [[0, 4], [1, 3], [2, 8], [5, 7], [6]]  # ascending by each batch's first index


def test_length_batches_shuffle_is_seeded() -> None:
    plain = length_batches(LENGTHS, batch_size=2)
    shuffled = length_batches(LENGTHS, batch_size=2, shuffle_seed=3)
    assert shuffled == length_batches(LENGTHS, batch_size=2, shuffle_seed=3)
    assert sorted(shuffled) == sorted(plain)
    orders = {tuple(map(tuple, length_batches(LENGTHS, batch_size=2, shuffle_seed=s))) for s in range(6)}
    assert len(orders) > 1


def test_bucket_width_pads_at_most_an_eighth_and_always_at_least_one_token() -> None:
    widths = {n: bucket_width(n) for n in range(1, 5000)}
    assert all(w > n for n, w in widths.items())  # a padding token in every row: every batch has a mask
    assert all(w % 8 == 0 for w in widths.values())
    assert max((w - n) / n for n, w in widths.items() if n >= 64) <= 0.125
    assert len(set(widths.values())) < 120  # few distinct widths (about 8 per octave), so buckets fill up
    assert [bucket_width(n) for n in (1, 8, 20, 100, 2047, 2048)] == [8, 16, 24, 104, 2048, 2056]
    with pytest.raises(ValueError, match="at least one token"):
        bucket_width(0)


def batch_order(batches: list[list[int]]) -> list[int]:
    """The rows of ``batches`` in the order the batches list them."""
    return [i for batch in batches for i in batch]


def test_token_batches_fill_the_budget_with_rows_of_one_width() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 300, (200,), generator=gen).tolist()
    for budget in (1, 64, 500, 4096, 10**6):
        batches = token_batches(lengths, budget)
        assert sorted(batch_order(batches)) == list(range(200))  # every row once
        for batch in batches:
            width = bucket_width(lengths[batch[0]])
            assert all(bucket_width(lengths[i]) == width for i in batch)
            assert len(batch) == 1 or len(batch) * width <= budget
        # the same row order whatever the budget (the sketch groups are cut in it)
        assert batch_order(batches) == batch_order(token_batches(lengths, 1))
    assert len(token_batches(lengths, 10**6)) == len({bucket_width(n) for n in lengths})  # one batch per width
    with pytest.raises(ValueError, match="at least 1"):
        token_batches(lengths, 0)


def test_collate_pads_to_a_given_width() -> None:
    batch = collate([Encoded((5, 6), (IGNORE_INDEX, 6))], pad_id=0, width=4)
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0]] and batch["attention_mask"].tolist() == [[1, 1, 0, 0]]
    with pytest.raises(ValueError, match="cannot pad to width 1"):
        collate([Encoded((5, 6), (IGNORE_INDEX, 6))], pad_id=0, width=1)
