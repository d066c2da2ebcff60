"""BM25 keyword relevance over rows of a namespace index, scored with numpy.

Postings are append-only per term (row, term frequency); a removed row stays in the postings
and is masked out by the caller, while corpus statistics (document count, lengths, document
frequencies) are kept exact so removal does not change how rare a word is.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Splits text into lower-cased word tokens (Unicode letters, digits, underscore)."""
    return _TOKEN.findall(text.lower())


class KeywordIndex:
    """An incremental Okapi BM25 index over integer rows.

    Args:
        k1: Term-frequency saturation.
        b: Length normalisation strength.
    """

    def __init__(self, *, k1: float = 1.5, b: float = 0.75) -> None:
        self._k1 = k1
        self._b = b
        # Postings per term, rows ascending (rows are appended in order and never reused).
        self._rows: dict[str, array[int]] = {}
        self._freqs: dict[str, array[float]] = {}
        self._doc_freq: Counter[str] = Counter()
        self._lengths = np.zeros(16, dtype=np.float64)
        self._live = 0
        self._total_length = 0

    def add(self, row: int, text: str) -> None:
        """Indexes the text of a new row (rows are never reused)."""
        tokens = tokenize(text)
        terms = Counter(tokens)
        for term, tf in terms.items():
            self._rows.setdefault(term, array("i")).append(row)
            self._freqs.setdefault(term, array("d")).append(tf)
        self._doc_freq.update(terms.keys())
        if row >= len(self._lengths):
            grown = np.zeros(max(row + 1, 2 * len(self._lengths)), dtype=np.float64)
            grown[: len(self._lengths)] = self._lengths
            self._lengths = grown
        self._lengths[row] = len(tokens)
        self._live += 1
        self._total_length += len(tokens)

    def remove(self, row: int, text: str) -> None:
        """Takes a row (indexed with ``text``) out of the corpus statistics."""
        tokens = tokenize(text)
        for term in set(tokens):
            self._doc_freq[term] -= 1
            if self._doc_freq[term] <= 0:
                del self._doc_freq[term]
        self._live -= 1
        self._total_length -= len(tokens)

    def scores(self, text: str, size: int) -> np.ndarray | None:
        """Raw BM25 score (>= 0) of every row below ``size`` against ``text``.

        Returns:
            A float64 array of length ``size`` (removed rows may hold stale scores: mask
            them), or ``None`` when no query word occurs in the corpus.
        """
        query_terms = set(tokenize(text)) & self._doc_freq.keys()
        if not query_terms or self._live == 0:
            return None
        average_length = self._total_length / self._live or 1.0
        total = np.zeros(size, dtype=np.float64)
        for term in query_terms:
            # Lucene's idf: always positive, so a word in every document still counts a bit.
            df = self._doc_freq[term]
            idf = math.log(1.0 + (self._live - df + 0.5) / (df + 0.5))
            rows = np.frombuffer(self._rows[term], dtype=np.int32)
            tf = np.frombuffer(self._freqs[term], dtype=np.float64)
            if rows[-1] >= size:  # ascending: only a tail can lie beyond ``size``
                end = int(np.searchsorted(rows, size))
                rows, tf = rows[:end], tf[:end]
            norm = self._k1 * (1.0 - self._b + self._b * self._lengths[rows] / average_length)
            total[rows] += idf * tf * (self._k1 + 1.0) / (tf + norm)
        return total
