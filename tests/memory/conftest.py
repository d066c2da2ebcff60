"""Memory test fixtures: the bundled MiniLM (loaded once per session) and a cheap fake
embedder that counts its calls."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from memory import LocalEmbedder
from memory._bm25 import tokenize


class WordHashEmbedder:
    """A deterministic bag-of-words embedder: shared words give a positive cosine.

    Counts every text it is asked to embed, so tests can prove the cache works.
    """

    def __init__(self, dimension: int = 384, name: str = "word-hash") -> None:
        self._dimension = dimension
        self._name = name
        self.calls: list[list[str]] = []

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.vector(text) for text in texts])

    def vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self._dimension, dtype=np.float32)
        for token in tokenize(text):
            digest = hashlib.sha256(token.encode()).digest()
            vector[int.from_bytes(digest[:4], "little") % self._dimension] += 1.0
        norm = np.linalg.norm(vector)
        return vector / norm if norm else vector

    @property
    def embedded(self) -> int:
        return sum(len(call) for call in self.calls)


@pytest.fixture
def word_embedder() -> WordHashEmbedder:
    return WordHashEmbedder()


@pytest.fixture(scope="session")
def minilm() -> LocalEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session."""
    embedder = LocalEmbedder()
    embedder.embed_sync(["warm up"])
    return embedder
