"""BM25 scores: the Lucene formula by hand, a copied query ranks first, subtask means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inflow.selection.bm25 import bm25_scores, subtask_mean_scores

DOCS = ["the red fox jumps over the fence", "a blue whale swims", "red red wine in a glass",
        "What is 3 plus 4? The answer is 7."]


def _lucene(docs: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """Lucene's BM25 (no (k1 + 1) factor: a constant, rank-neutral), straight from the formula."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    out = np.zeros(n)
    for t in set(query):
        df = sum(t in d for d in docs)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(t)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return out


def test_matches_the_formula_by_hand() -> None:
    # after lower-casing and stopword removal (the, a, in, is, ...): the words BM25 indexes
    words = [["red", "fox", "jumps", "over", "fence"], ["blue", "whale", "swims"], ["red", "red", "wine", "glass"],
             ["what", "3", "plus", "4", "answer", "7"]]
    for k1, b in ((1.5, 0.75), (0.9, 0.4)):
        got = bm25_scores(DOCS, ["red fox", "plus 7", "wine"], k1, b)
        assert got.shape == (4, 3) and got.dtype == np.float64
        for j, query in enumerate([["red", "fox"], ["plus", "7"], ["wine"]]):
            np.testing.assert_allclose(got[:, j], _lucene(words, query, k1, b), rtol=1e-5)


def test_copied_query_ranks_first_and_unknown_words_score_zero() -> None:
    docs = DOCS + ["Question: Which country is Sarvo in? A. Rhen B. Ubra"]
    scores = bm25_scores(docs, ["Question: Which country is Sarvo in? A. Rhen B. Ubra", "zebra quokka"])
    assert int(np.argmax(scores[:, 0])) == len(docs) - 1
    assert scores[-1, 0] > 2 * np.sort(scores[:, 0])[-2]
    assert not scores[:, 1].any()


def test_single_characters_count() -> None:  # digits and option letters are words here
    scores = bm25_scores(["x 7 y", "x 8 y"], ["7"])
    assert scores[0, 0] > 0 and scores[1, 0] == 0


def test_subtask_means() -> None:
    scores = np.arange(12, dtype=np.float64).reshape(3, 4)
    names, means = subtask_mean_scores(scores, ["b", "a", "b", "a"])
    assert names == ["a", "b"]
    np.testing.assert_array_equal(means, np.stack([scores[:, [1, 3]].mean(1), scores[:, [0, 2]].mean(1)], 1))
    with pytest.raises(ValueError, match="3 subtask labels for 4"):
        subtask_mean_scores(scores, ["a", "b", "a"])


def test_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="pool is empty"):
        bm25_scores([], ["query"])
