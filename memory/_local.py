"""``EpisodicMemory`` in one process, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from memory._embedded import EmbeddedStore
from memory._episode import Episode, RecallQuery, ScoredEpisode


class LocalMemory:
    """``EpisodicMemory`` over an ``EmbeddedStore`` in this process (tests, single process).

    Store calls run in a worker thread so a write's fsync does not stall the event loop.

    Args:
        store: The store to use.
    """

    def __init__(self, store: EmbeddedStore) -> None:
        self._store = store

    async def remember(self, episodes: Sequence[Episode]) -> int:
        """See ``EpisodicMemory.remember``."""
        return await asyncio.to_thread(self._store.remember, list(episodes))

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """See ``EpisodicMemory.recall``."""
        return await asyncio.to_thread(self._store.recall, query)

    async def count(self, namespace: str = "default") -> int:
        """See ``EpisodicMemory.count``."""
        return await asyncio.to_thread(self._store.count, namespace)
