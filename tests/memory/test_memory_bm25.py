"""The BM25 keyword index on its own: scores per row, and rows beyond ``size`` left out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memory._bm25 import KeywordIndex, tokenize

TEXTS = ["red apple pie", "green apple", "red car", "blue sky over the red sea", "apple"]


def _bm25(query: str, texts: list[str], *, k1: float = 1.5, b: float = 0.75) -> list[float]:
    docs = [tokenize(t) for t in texts]
    average = sum(len(d) for d in docs) / len(docs)
    scores = []
    for doc in docs:
        total = 0.0
        for term in set(tokenize(query)):
            df = sum(1 for d in docs if term in d)
            if df == 0:
                continue
            idf = math.log(1.0 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc.count(term)
            total += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len(doc) / average))
        scores.append(total)
    return scores


def test_scores_are_okapi_bm25_per_row() -> None:
    index = KeywordIndex()
    for row, text in enumerate(TEXTS):
        index.add(row, text)
    scores = index.scores("red apple", len(TEXTS))
    assert scores is not None
    assert scores.tolist() == pytest.approx(_bm25("red apple", TEXTS))
    assert index.scores("nothing here", len(TEXTS)) is None


def test_rows_at_or_beyond_size_are_left_out() -> None:
    index = KeywordIndex()
    for row, text in enumerate(TEXTS):
        index.add(row, text)
    whole = index.scores("apple", len(TEXTS))
    part = index.scores("apple", 3)
    assert whole is not None and part is not None
    assert len(part) == 3
    np.testing.assert_allclose(part, whole[:3])
