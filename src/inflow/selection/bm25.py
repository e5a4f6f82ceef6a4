"""BM25 lexical relevance of every pool row to a target task's validation rows (the LESS paper's BM25 baseline).

Documents are the pool rows' rendered text (prompt and answer, as the model reads them), queries the validation
rows' rendered prompt and answer. Scoring is the Lucene variant of Okapi BM25 (``bm25s``; it drops Okapi's
constant factor k1 + 1, which changes no ranking):

    s(d, q) = Σ_{t ∈ q} idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t)  = log(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

A subtask's score of a row is the mean of its scores against the subtask's validation rows, so the subtask
rules of LESS (``select.subtask_rule``) apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOKEN_PATTERN = r"(?u)\b\w+\b"
"""Words of one or more characters: digits and option letters count (bm25s's default drops 1-character tokens)."""


def bm25_scores(documents: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """BM25 score of every document against every query: ``[len(documents), len(queries)]`` float64.

    Text is lower-cased, split on :data:`TOKEN_PATTERN`, English stopwords removed; a query with no indexed
    word scores 0 everywhere.
    """
    import bm25s  # imported here: only the bm25 stage needs it

    if not documents:
        raise ValueError("BM25 needs at least one document (the pool is empty)")
    tokenize = dict(lower=True, token_pattern=TOKEN_PATTERN, stopwords="en", show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(bm25s.tokenize(list(documents), **tokenize), show_progress=False)
    words = bm25s.tokenize(list(queries), return_ids=False, **tokenize)
    out = np.zeros((len(documents), len(queries)), dtype=np.float64)
    for j, query in enumerate(words):
        known = [w for w in query if w in retriever.vocab_dict]
        if known:
            out[:, j] = retriever.get_scores(known)
    return out


def subtask_mean_scores(scores: np.ndarray, subtasks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Per subtask, the mean of ``scores`` ``[n, m]`` over its columns (column j belongs to ``subtasks[j]``):
    (sorted subtask names, ``[n, S]`` float64)."""
    if len(subtasks) != scores.shape[1]:
        raise ValueError(f"{len(subtasks)} subtask labels for {scores.shape[1]} query columns")
    labels = np.asarray(subtasks)
    names = sorted(set(subtasks))
    return names, np.stack([scores[:, labels == name].mean(axis=1) for name in names], axis=1)
