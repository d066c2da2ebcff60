"""The interface agents see (``EpisodicMemory``) and how recall ranks (``RecallWeights``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from memory._episode import Episode, MemoryFilter, RecallQuery, ScoredEpisode

Vectors = np.ndarray | Sequence[Sequence[float]]
"""One embedding per episode, in order: an ``(n, dimension)`` array or a list of lists."""


@runtime_checkable
class EpisodicMemory(Protocol):
    """Episodic memory as agents use it: record episodes, recall the most useful ones.

    Implementations: ``LocalMemory`` (in-process), ``RayMemory`` (one shared actor) and
    ``WeaviateMemory``. Agents that only call ``remember``/``recall``/``count`` keep working
    unchanged: the new parameters are optional.
    """

    async def remember(self, episodes: Sequence[Episode], *, vectors: Vectors | None = None) -> int:
        """Stores episodes durably.

        An episode whose id is already stored replaces it (or is a no-op when identical); it
        is never stored twice. Without ``vectors``, a memory with an embedder embeds the
        contents itself; one without stores keyword-searchable episodes only.

        Returns:
            How many of the episodes were not stored before.

        Raises:
            ValueError: If a vector has the wrong dimension or count.
        """
        ...

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """Returns up to ``query.k`` unexpired episodes that pass the filters, best first."""
        ...

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        """``recall`` for several queries at once (one round trip where the store is remote),
        one list per query, in order."""
        ...

    async def forget(self, where: MemoryFilter) -> int:
        """Deletes every episode matching the filter (by age: ``until=cutoff``).

        Returns:
            How many episodes were deleted.
        """
        ...

    async def forget_expired(self, namespace: str = "default") -> int:
        """Deletes the namespace's episodes whose TTL has run out; returns how many."""
        ...

    async def count(self, namespace: str = "default") -> int:
        """Returns how many episodes the namespace holds."""
        ...


class RecallWeights(BaseModel):
    """How recall ranks: the Generative Agents score over hybrid relevance.

    Each component is in [0, 1]. Relevance fuses two normalised scores by weighted sum
    (Weaviate's "relative score" style, not RRF): ``hybrid_alpha * cosine + (1 - hybrid_alpha) *
    bm25 / best_bm25``, where the cosine is clipped at 0. With only text (no query vector)
    relevance is the BM25 part alone, with only a vector the cosine alone. Recency halves every
    ``recency_half_life_hours``; importance is the episode's own. The score is their weighted sum.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    relevance: float = Field(default=1.0, ge=0.0, description="Weight of the hybrid match.")
    recency: float = Field(default=1.0, ge=0.0, description="Weight of recency.")
    importance: float = Field(default=1.0, ge=0.0, description="Weight of importance.")
    recency_half_life_hours: float = Field(
        default=24.0, gt=0.0, description="Age at which the recency component is 0.5."
    )
    hybrid_alpha: float = Field(
        # Weaviate's default too; on the labelled set (paraphrased questions) 0.75 beats 0.5.
        default=0.75,
        ge=0.0,
        le=1.0,
        description="Share of the vector cosine in relevance when a query has text and vector.",
    )
