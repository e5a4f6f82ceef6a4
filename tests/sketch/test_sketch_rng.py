"""The counter-based generator: lowbias32 against a numpy uint32 reference, words against the formula, keys."""

from __future__ import annotations

import numpy as np
import torch

from inflow.sketch.counter_rng import MASK32, derive_key, mix32_, random_words, random_words_range, stream_key


def lowbias32_numpy(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def test_mix32_matches_uint32_reference() -> None:
    values = np.concatenate([np.arange(1000), np.random.default_rng(0).integers(0, 2**32, 10_000), [MASK32]])
    got = mix32_(torch.from_numpy(values.astype(np.int64))).numpy()
    np.testing.assert_array_equal(got.astype(np.uint64), lowbias32_numpy(values).astype(np.uint64))


def test_random_words_follow_the_formula() -> None:
    key = derive_key(3, 1, 2)
    rows, cols = torch.tensor([0, 5, 2**32 - 1]), torch.tensor([0, 1, 31, 1000])
    got = random_words(key, rows, cols)
    k_lo, k_hi = key & MASK32, key >> 32
    for i, r in enumerate(rows.tolist()):
        s = int(lowbias32_numpy(np.array([r ^ k_lo]))[0])
        t = int(lowbias32_numpy(np.array([s ^ k_hi]))[0])
        for j, c in enumerate(cols.tolist()):
            inner = int(lowbias32_numpy(np.array([s ^ c]))[0])
            assert int(got[i, j]) == int(lowbias32_numpy(np.array([inner ^ t]))[0])


def test_words_depend_only_on_their_coordinates() -> None:
    key = stream_key("rademacher", 0, 4, 0)
    whole = random_words_range(key, 0, 50, 7, torch.device("cpu"))
    part = random_words_range(key, 20, 30, 3, torch.device("cpu"))
    assert torch.equal(whole[20:30, :3], part)
    assert int(whole.min()) >= 0 and int(whole.max()) <= MASK32


def test_bits_are_balanced() -> None:
    words = random_words_range(stream_key("x", 1, 0, 0), 0, 4096, 8, torch.device("cpu"))
    bits = (words.unsqueeze(-1) >> torch.arange(32)) & 1
    per_bit = bits.double().mean(dim=(0, 1))  # 32768 samples per bit: std 0.0028
    assert torch.all((per_bit - 0.5).abs() < 0.015)


def test_keys_do_not_collide_over_seeds_and_blocks() -> None:
    keys = {stream_key(kind, seed, block, stream)
            for kind in ("rademacher", "hadamard") for seed in range(40) for block in range(40) for stream in (0, 1)}
    assert len(keys) == 2 * 40 * 40 * 2
    assert derive_key(1, 0) != derive_key(0, 1)  # additive seeding would collide here
