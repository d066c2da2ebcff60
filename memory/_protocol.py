"""The interface agents see (``EpisodicMemory``) and how recall ranks (``RecallWeights``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from memory._episode import Episode, RecallQuery, ScoredEpisode


@runtime_checkable
class EpisodicMemory(Protocol):
    """Episodic memory as agents use it: record episodes, recall the most useful ones.

    Implementations: ``LocalMemory`` (in-process) and ``RayMemory`` (one shared actor).
    """

    async def remember(self, episodes: Sequence[Episode]) -> int:
        """Stores episodes durably.

        An episode whose id is already stored replaces it (or is a no-op when identical); it
        is never stored twice.

        Returns:
            How many of the episodes were not stored before.
        """
        ...

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """Returns up to ``query.k`` episodes that pass the filters, best score first."""
        ...

    async def count(self, namespace: str = "default") -> int:
        """Returns how many episodes the namespace holds."""
        ...


class RecallWeights(BaseModel):
    """How recall ranks: the Generative Agents score.

    Each component is in [0, 1]: relevance is the text match divided by the best match among
    the candidates, recency halves every ``recency_half_life_hours``, importance is the
    episode's own. The score is their weighted sum.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    relevance: float = Field(default=1.0, ge=0.0, description="Weight of the text match.")
    recency: float = Field(default=1.0, ge=0.0, description="Weight of recency.")
    importance: float = Field(default=1.0, ge=0.0, description="Weight of importance.")
    recency_half_life_hours: float = Field(
        default=24.0, gt=0.0, description="Age at which the recency component is 0.5."
    )
