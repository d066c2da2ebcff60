"""BM25 keyword relevance: the first-cut relevance score until vectors arrive.

The index only answers "how well does each of these documents match this text"; the store
decides which documents are candidates and how relevance mixes with the other components,
so a vector index can later stand beside or replace this one behind the same ``scores`` call.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Splits text into lower-cased word tokens (Unicode letters, digits, underscore)."""
    return _TOKEN.findall(text.lower())


class BM25Index:
    """An incremental Okapi BM25 index over documents identified by string ids.

    Args:
        k1: Term-frequency saturation.
        b: Length normalisation strength.
    """

    def __init__(self, *, k1: float = 1.5, b: float = 0.75) -> None:
        self._k1 = k1
        self._b = b
        self._terms: dict[str, Counter[str]] = {}
        self._lengths: dict[str, int] = {}
        self._doc_freq: Counter[str] = Counter()
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._terms)

    def add(self, doc_id: str, text: str) -> None:
        """Indexes a document, replacing any previous text under the same id."""
        self.remove(doc_id)
        tokens = tokenize(text)
        terms = Counter(tokens)
        self._terms[doc_id] = terms
        self._lengths[doc_id] = len(tokens)
        self._total_length += len(tokens)
        self._doc_freq.update(terms.keys())

    def remove(self, doc_id: str) -> None:
        """Forgets a document; unknown ids are ignored."""
        terms = self._terms.pop(doc_id, None)
        if terms is None:
            return
        self._total_length -= self._lengths.pop(doc_id)
        self._doc_freq.subtract(terms.keys())
        for term in terms:
            if self._doc_freq[term] <= 0:
                del self._doc_freq[term]

    def scores(self, text: str, doc_ids: Iterable[str]) -> dict[str, float]:
        """Scores the given documents against ``text``.

        Corpus statistics (document count, average length, document frequencies) come from
        the whole index, not just ``doc_ids``, so a filter does not change how rare a word is.

        Returns:
            Raw BM25 score (>= 0, unbounded) per requested id; 0 when nothing matches.
        """
        query_terms = set(tokenize(text)) & self._doc_freq.keys()
        if not query_terms:
            return dict.fromkeys(doc_ids, 0.0)
        idf = {term: self._idf(term) for term in query_terms}
        average_length = self._total_length / len(self._terms) or 1.0
        return {doc_id: self._score(doc_id, idf, average_length) for doc_id in doc_ids}

    def _idf(self, term: str) -> float:
        # Lucene's variant: always positive, so a word in every document still counts a bit.
        n, df = len(self._terms), self._doc_freq[term]
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _score(self, doc_id: str, idf: dict[str, float], average_length: float) -> float:
        terms = self._terms[doc_id]
        norm = self._k1 * (1.0 - self._b + self._b * self._lengths[doc_id] / average_length)
        total = 0.0
        for term, weight in idf.items():
            tf = terms.get(term, 0)
            if tf:
                total += weight * tf * (self._k1 + 1.0) / (tf + norm)
        return total
