"""The embedded store: episodes in process memory, persisted to one JSON-lines file.

Plain synchronous Python with no Ray in it: ``LocalMemory`` wraps it for single-process use
and ``MemoryActor`` hosts one instance that every agent shares.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from memory._bm25 import BM25Index
from memory._episode import Episode, RecallQuery, ScoredEpisode, utc_now
from memory._journal import EpisodeJournal
from memory._protocol import RecallWeights

_SECONDS_PER_HOUR = 3600.0


@dataclass
class _Namespace:
    """One isolated scope: its episodes and its own text index (so word rarity is per scope)."""

    episodes: dict[str, Episode] = field(default_factory=dict)
    index: BM25Index = field(default_factory=BM25Index)

    def put(self, episode: Episode) -> None:
        self.episodes[episode.id] = episode
        self.index.add(episode.id, episode.content)


class EmbeddedStore:
    """Episodic memory in one process, ranked by BM25 relevance + recency + importance.

    Recall scans the namespace's episodes (fine for the tens of thousands a first deployment
    holds; an ANN index comes with vectors). Methods are thread-safe.

    Args:
        path: The JSON-lines file to load from and append to; ``None`` keeps everything in
            memory only. One store (one process) may write a given file at a time.
        weights: How recall ranks.
        clock: Returns "now" as an aware datetime; recency is measured against it.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        weights: RecallWeights | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._journal = None if path is None else EpisodeJournal(path)
        self._weights = weights or RecallWeights()
        self._clock = clock
        # Ray runs a sync actor's calls on one thread, but LocalMemory uses worker threads.
        self._lock = threading.Lock()
        self._namespaces: dict[str, _Namespace] = {}
        if self._journal is not None:
            for episode in self._journal.load():
                self._namespace(episode.namespace).put(episode)

    @property
    def path(self) -> Path | None:
        """The file this store persists to, or ``None`` for a memory-only store."""
        return None if self._journal is None else self._journal.path

    def remember(self, episodes: Sequence[Episode]) -> int:
        """Stores episodes durably (written and fsynced before this returns).

        An episode whose id the namespace already holds replaces it; an identical one is not
        written again. Within one batch, the last episode with a given id wins.

        Returns:
            How many episodes were not stored before.
        """
        batch = list({(e.namespace, e.id): e for e in episodes}.values())
        with self._lock:
            changed = [e for e in batch if self._stored(e) != e]
            new = sum(1 for e in changed if self._stored(e) is None)
            # File first: if the write fails, memory must not claim what the disk lacks.
            if self._journal is not None:
                self._journal.append(changed)
            for episode in changed:
                self._namespace(episode.namespace).put(episode)
        return new

    def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """Returns up to ``query.k`` episodes passing every filter, highest score first.

        Ties go to the newer episode, then to the smaller id, so results are deterministic.
        """
        with self._lock:
            scope = self._namespaces.get(query.namespace)
            if scope is None:
                return []
            candidates = [e for e in scope.episodes.values() if _passes(e, query)]
            relevance = self._relevance(scope, query.text, candidates)
        now = self._clock()
        scored = [self._score(e, relevance[e.id], now) for e in candidates]
        return heapq.nsmallest(
            query.k,
            scored,
            key=lambda s: (-s.score, -s.episode.created_at.timestamp(), s.episode.id),
        )

    def count(self, namespace: str = "default") -> int:
        """Returns how many episodes the namespace holds."""
        with self._lock:
            scope = self._namespaces.get(namespace)
            return 0 if scope is None else len(scope.episodes)

    def _namespace(self, name: str) -> _Namespace:
        return self._namespaces.setdefault(name, _Namespace())

    def _stored(self, episode: Episode) -> Episode | None:
        scope = self._namespaces.get(episode.namespace)
        return None if scope is None else scope.episodes.get(episode.id)

    def _relevance(
        self, scope: _Namespace, text: str, candidates: list[Episode]
    ) -> dict[str, float]:
        """Text match per candidate, divided by the best match so the top one scores 1."""
        # The single place a vector similarity would be blended in when embeddings arrive.
        raw = scope.index.scores(text, (e.id for e in candidates))
        best = max(raw.values(), default=0.0)
        if best <= 0.0:
            return dict.fromkeys(raw, 0.0)
        return {doc_id: value / best for doc_id, value in raw.items()}

    def _score(self, episode: Episode, relevance: float, now: datetime) -> ScoredEpisode:
        weights = self._weights
        age_hours = max(0.0, (now - episode.created_at).total_seconds() / _SECONDS_PER_HOUR)
        recency = 0.5 ** (age_hours / weights.recency_half_life_hours)
        score = (
            weights.relevance * relevance
            + weights.recency * recency
            + weights.importance * episode.importance
        )
        return ScoredEpisode(
            episode=episode,
            score=score,
            relevance=relevance,
            recency=recency,
            importance=episode.importance,
        )


def _passes(episode: Episode, query: RecallQuery) -> bool:
    """Whether an episode satisfies every filter of the query."""
    return (
        (query.kinds is None or episode.kind in query.kinds)
        and (query.agent is None or episode.agent == query.agent)
        and (query.task_id is None or episode.task_id == query.task_id)
        and all(tag in episode.tags for tag in query.tags)
        and (query.since is None or episode.created_at >= query.since)
        and (query.until is None or episode.created_at < query.until)
    )
