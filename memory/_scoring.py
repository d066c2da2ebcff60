"""Generative Agents scoring for backends that return a candidate list (Weaviate)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from memory._episode import Episode, ScoredEpisode
from memory._protocol import RecallWeights

_SECONDS_PER_HOUR = 3600.0


def rank(
    candidates: Sequence[tuple[Episode, float, float, float]],
    *,
    weights: RecallWeights,
    now: datetime,
    k: int,
) -> list[ScoredEpisode]:
    """Scores candidates and returns the best ``k`` (ties: newer first, then smaller id).

    Args:
        candidates: ``(episode, relevance, keyword, similarity)``, each in [0, 1].
        weights: How the components combine.
        now: Recency is measured against it.
        k: How many to return.
    """
    scored = []
    for episode, relevance, keyword, similarity in candidates:
        age_hours = max(0.0, (now - episode.created_at).total_seconds() / _SECONDS_PER_HOUR)
        recency = math.exp2(-age_hours / weights.recency_half_life_hours)
        score = (
            weights.relevance * relevance
            + weights.recency * recency
            + weights.importance * episode.importance
        )
        scored.append(
            ScoredEpisode(
                episode=episode,
                score=score,
                relevance=_unit(relevance),
                keyword=_unit(keyword),
                similarity=_unit(similarity),
                recency=recency,
                importance=episode.importance,
            )
        )
    scored.sort(key=lambda s: (-s.score, -s.episode.created_at.timestamp(), s.episode.id))
    return scored[:k]


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))
