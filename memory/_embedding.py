"""Embedders: the ``Embedder`` interface, a cache in front of any embedder, and helpers that
attach embeddings to episodes and queries."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from memory._episode import Episode, RecallQuery


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors.

    ``embed`` returns a float32 array of shape ``(len(texts), dimension)`` with unit-length
    rows (so a dot product is the cosine similarity).
    """

    @property
    def model_name(self) -> str:
        """The model's name, recorded on each episode it embeds (``embedding_model``)."""
        ...

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds the texts, one row each, in order."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Returns float32 rows scaled to unit length (zero rows stay zero)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class CachedEmbedder:
    """An ``Embedder`` that asks the one it wraps only for texts it has not seen.

    A bounded LRU keyed by a SHA-256 of (model name, text): the same text is embedded once
    while it stays among the ``max_entries`` most recently used. Repeats inside one batch are
    embedded once too.

    Args:
        inner: The embedder to call on a miss.
        max_entries: Cache size; 10,000 entries of 384 floats are about 15 MiB.
    """

    def __init__(self, inner: Embedder, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._inner = inner
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def model_name(self) -> str:
        """See ``Embedder.model_name``."""
        return self._inner.model_name

    @property
    def dimension(self) -> int:
        """See ``Embedder.dimension``."""
        return self._inner.dimension

    def __len__(self) -> int:
        return len(self._entries)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """See ``Embedder.embed``."""
        keys = [self._key(text) for text in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in self._entries:
                self._entries.move_to_end(key)
            else:
                missing.setdefault(key, text)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[bytes, np.ndarray] = {}
        if missing:
            vectors = normalise(await self._inner.embed(list(missing.values())))
            if vectors.shape != (len(missing), self.dimension):
                raise ValueError(
                    f"{self.model_name} returned vectors of shape {vectors.shape}, "
                    f"expected ({len(missing)}, {self.dimension})"
                )
            fresh = dict(zip(missing, vectors, strict=True))
        rows = [fresh[key] if key in fresh else self._entries[key] for key in keys]
        for key, vector in fresh.items():
            self._entries[key] = vector
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(rows)

    def __getstate__(self) -> dict[str, object]:
        # Shipped to another process (a Ray actor), the cache starts empty there.
        return {**self.__dict__, "_entries": OrderedDict()}

    def _key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model_name}\0{text}".encode()).digest()


async def embed_episodes(
    embedder: Embedder | None, episodes: Sequence[Episode]
) -> tuple[list[Episode], np.ndarray | None]:
    """Embeds episode contents and records the model on each episode.

    Returns:
        The episodes (with ``embedding_model`` set) and their vectors, or the episodes
        unchanged and ``None`` when there is no embedder.
    """
    batch = list(episodes)
    if embedder is None or not batch:
        return batch, None
    vectors = await embedder.embed([episode.content for episode in batch])
    name = embedder.model_name
    tagged = [
        e if e.embedding_model == name else e.model_copy(update={"embedding_model": name})
        for e in batch
    ]
    return tagged, vectors


async def embed_query(embedder: Embedder | None, query: RecallQuery) -> RecallQuery:
    """Adds the embedding of the query text when there is an embedder and no vector yet."""
    [query] = await embed_queries(embedder, [query])
    return query


async def embed_queries(
    embedder: Embedder | None, queries: Sequence[RecallQuery]
) -> list[RecallQuery]:
    """``embed_query`` for several queries, with one call to the embedder."""
    done = list(queries)
    todo = [i for i, q in enumerate(queries) if q.vector is None and q.text.strip()]
    if embedder is None or not todo:
        return done
    vectors = await embedder.embed([queries[i].text for i in todo])
    for i, vector in zip(todo, vectors, strict=True):
        done[i] = queries[i].model_copy(update={"vector": tuple(float(x) for x in vector)})
    return done
