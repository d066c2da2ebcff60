"""``EpisodicMemory`` in one process, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from memory._embedded import EmbeddedStore
from memory._embedding import Embedder, embed_episodes, embed_queries, embed_query
from memory._episode import Episode, MemoryFilter, RecallQuery, ScoredEpisode
from memory._protocol import Vectors


class LocalMemory:
    """``EpisodicMemory`` over an ``EmbeddedStore`` in this process (tests, single process).

    Store calls run in a worker thread so a write's fsync does not stall the event loop.

    Args:
        store: The store to use.
        embedder: Embeds episodes and query texts that come without vectors; ``None`` keeps
            recall keyword-only unless callers pass vectors. Wrap it in ``CachedEmbedder``.
    """

    def __init__(self, store: EmbeddedStore, *, embedder: Embedder | None = None) -> None:
        self._store = store
        self._embedder = embedder

    async def remember(self, episodes: Sequence[Episode], *, vectors: Vectors | None = None) -> int:
        """See ``EpisodicMemory.remember``."""
        batch = list(episodes)
        if vectors is None:
            batch, vectors = await embed_episodes(self._embedder, batch)
        return await asyncio.to_thread(self._store.remember, batch, vectors)

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """See ``EpisodicMemory.recall``."""
        query = await embed_query(self._embedder, query)
        return await asyncio.to_thread(self._store.recall, query)

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        """See ``EpisodicMemory.recall_many``."""
        embedded = await embed_queries(self._embedder, queries)
        return await asyncio.to_thread(lambda: [self._store.recall(q) for q in embedded])

    async def forget(self, where: MemoryFilter) -> int:
        """See ``EpisodicMemory.forget``."""
        return await asyncio.to_thread(self._store.forget, where)

    async def forget_expired(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.forget_expired``."""
        return await asyncio.to_thread(self._store.forget_expired, namespace)

    async def count(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.count``."""
        return await asyncio.to_thread(self._store.count, namespace)
