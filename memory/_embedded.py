"""The embedded store: episodes and vectors in process memory, persisted to one JSON-lines file.

Plain synchronous Python with no Ray in it: ``LocalMemory`` wraps it for single-process use
and ``MemoryActor`` hosts one instance that every agent shares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from memory._embedding import normalise
from memory._episode import Episode, MemoryFilter, RecallQuery, ScoredEpisode, utc_now
from memory._journal import DeleteRecord, EpisodeJournal, PutRecord
from memory._protocol import RecallWeights, Vectors
from memory._table import NamespaceTable
from protocols import ConfigurationError

_SECONDS_PER_HOUR = 3600.0
# Rebuild a namespace when this many rows are dead and they outnumber the live ones.
_COMPACT_MIN_DEAD = 1024


class EmbeddedStore:
    """Episodic memory in one process: exact vector search (numpy) + BM25, filters, TTL.

    Recall scores every candidate that passes the filters with the hybrid relevance, recency
    and importance (see ``RecallWeights``); the vector part is one matrix-vector product over
    a contiguous float32 matrix of unit vectors. Methods are thread-safe.

    Args:
        path: The JSON-lines file to load from and append to; ``None`` keeps everything in
            memory only. One store (one process) may write a given file at a time.
        weights: How recall ranks.
        clock: Returns "now" as an aware datetime; recency and expiry are measured against it.
        dimension: Length of every vector stored or queried.

    Raises:
        ConfigurationError: If the file holds vectors of another dimension.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        weights: RecallWeights | None = None,
        clock: Callable[[], datetime] = utc_now,
        dimension: int = 384,
    ) -> None:
        self._journal = None if path is None else EpisodeJournal(path)
        self._weights = weights or RecallWeights()
        self._clock = clock
        self._dimension = dimension
        # Ray runs a sync actor's calls on one thread, but LocalMemory uses worker threads.
        self._lock = threading.Lock()
        self._tables: dict[str, NamespaceTable] = {}
        self._accessed: dict[tuple[str, str], datetime] = {}
        if self._journal is not None:
            self._replay(self._journal)

    @property
    def path(self) -> Path | None:
        """The file this store persists to, or ``None`` for a memory-only store."""
        return None if self._journal is None else self._journal.path

    @property
    def dimension(self) -> int:
        """Length of the vectors this store holds."""
        return self._dimension

    def remember(self, episodes: Sequence[Episode], vectors: Vectors | None = None) -> int:
        """Stores episodes (and their vectors) durably: written and fsynced before returning.

        An episode whose id the namespace already holds replaces it; an identical one (same
        episode, and no vector or the same vector) is not written again. Within one batch the
        last episode with a given id wins.

        Args:
            episodes: The episodes.
            vectors: One vector per episode, or ``None`` for keyword-only episodes.

        Returns:
            How many episodes were not stored before.

        Raises:
            ValueError: If ``vectors`` does not have one row of ``dimension`` per episode.
        """
        units = self._check_vectors(vectors, len(episodes))
        latest: dict[tuple[str, str], tuple[Episode, np.ndarray | None]] = {}
        for i, episode in enumerate(episodes):
            latest[(episode.namespace, episode.id)] = (episode, None if units is None else units[i])
        with self._lock:
            changed = [(e, v) for e, v in latest.values() if self._differs(e, v)]
            new = sum(1 for e, _ in changed if self._stored(e) is None)
            # File first: if the write fails, memory must not claim what the disk lacks.
            if self._journal is not None:
                self._journal.append([PutRecord.of(e, v) for e, v in changed])
            for episode, vector in changed:
                self._table(episode.namespace).put(episode, vector)
        return new

    def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        """Returns up to ``query.k`` unexpired episodes passing every filter, best first.

        Ties go to the newer episode, then to the smaller id, so results are deterministic.

        Raises:
            ValueError: If the query vector does not have the store's dimension.
        """
        vector = None if query.vector is None else self._check_query_vector(query.vector)
        now = self._clock()
        with self._lock:
            table = self._tables.get(query.namespace)
            if table is None:
                return []
            rows = np.flatnonzero(table.mask(query, now))
            if len(rows) == 0:
                return []
            keyword = _keyword_scores(table, query.text, rows)
            similarity = None if vector is None else np.clip(table.similarities(vector, rows), 0, 1)
            relevance = self._fuse(keyword, similarity, has_text=bool(query.text.strip()))
            weights = self._weights
            age_hours = np.maximum(0.0, (now.timestamp() - table.created[rows]) / _SECONDS_PER_HOUR)
            recency = np.exp2(-age_hours / weights.recency_half_life_hours)
            importance = table.importance[rows]
            score = (
                weights.relevance * relevance
                + weights.recency * recency
                + weights.importance * importance
            )
            chosen = _top(score, table.created[rows], rows, table, query.k)
            results = []
            for i in chosen:
                episode = table.episodes[int(rows[i])]
                assert episode is not None
                key = (query.namespace, episode.id)
                previous = self._accessed.get(key)
                self._accessed[key] = now
                if previous is not None:
                    episode = episode.model_copy(update={"last_accessed": previous})
                results.append(
                    ScoredEpisode(
                        episode=episode,
                        score=float(score[i]),
                        relevance=float(relevance[i]),
                        keyword=float(keyword[i]),
                        similarity=0.0 if similarity is None else float(similarity[i]),
                        recency=float(recency[i]),
                        importance=float(importance[i]),
                    )
                )
        return results

    def forget(self, where: MemoryFilter) -> int:
        """Deletes every episode matching the filter (expired or not), durably.

        Returns:
            How many episodes were deleted.
        """
        with self._lock:
            table = self._tables.get(where.namespace)
            if table is None:
                return 0
            rows = np.flatnonzero(table.mask(where, None))
            return self._delete(where.namespace, table, rows)

    def forget_expired(self, namespace: str = "default") -> int:
        """Deletes the namespace's episodes whose ``expires_at`` has passed; returns how many."""
        now = self._clock().timestamp()
        with self._lock:
            table = self._tables.get(namespace)
            if table is None:
                return 0
            n = table.size
            rows = np.flatnonzero(table.alive[:n] & (table.expires[:n] <= now))
            return self._delete(namespace, table, rows)

    def count(self, namespace: str = "default") -> int:
        """Returns how many episodes the namespace holds (expired ones until forgotten)."""
        with self._lock:
            table = self._tables.get(namespace)
            return 0 if table is None else len(table)

    def _delete(self, namespace: str, table: NamespaceTable, rows: np.ndarray) -> int:
        ids = []
        for row in rows:
            episode = table.episodes[int(row)]
            assert episode is not None
            ids.append(episode.id)
        if not ids:
            return 0
        if self._journal is not None:
            self._journal.append([DeleteRecord(namespace=namespace, ids=tuple(ids))])
        for episode_id in ids:
            table.remove(episode_id)
            self._accessed.pop((namespace, episode_id), None)
        self._maybe_compact(namespace)
        return len(ids)

    def _maybe_compact(self, namespace: str) -> None:
        table = self._tables[namespace]
        dead = table.dead_rows()
        if dead >= _COMPACT_MIN_DEAD and dead > len(table):
            self._tables[namespace] = table.compacted()

    def _replay(self, journal: EpisodeJournal) -> None:
        for record in journal.load():
            if isinstance(record, DeleteRecord):
                table = self._tables.get(record.namespace)
                if table is not None:
                    for episode_id in record.ids:
                        table.remove(episode_id)
                continue
            vector = record.decoded_vector()
            if vector is not None and vector.shape != (self._dimension,):
                raise ConfigurationError(
                    f"{journal.path} holds {vector.shape[0]}-d vectors but the store is "
                    f"configured for {self._dimension}: use the same embedding model"
                )
            self._table(record.episode.namespace).put(record.episode, vector)
        for namespace in list(self._tables):
            self._maybe_compact(namespace)

    def _table(self, namespace: str) -> NamespaceTable:
        table = self._tables.get(namespace)
        if table is None:
            table = self._tables[namespace] = NamespaceTable(self._dimension)
        return table

    def _stored(self, episode: Episode) -> Episode | None:
        table = self._tables.get(episode.namespace)
        return None if table is None else table.get(episode.id)

    def _differs(self, episode: Episode, vector: np.ndarray | None) -> bool:
        if self._stored(episode) != episode:
            return True
        if vector is None:
            return False
        stored = self._tables[episode.namespace].vector_of(episode.id)
        return stored is None or not np.array_equal(stored, vector)

    def _check_vectors(self, vectors: Vectors | None, count: int) -> np.ndarray | None:
        if vectors is None:
            return None
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (count, self._dimension):
            raise ValueError(
                f"vectors must have shape ({count}, {self._dimension}) (one {self._dimension}-d "
                f"vector per episode), got {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            raise ValueError("vectors must be finite (no NaN or infinity)")
        return normalise(matrix)

    def _check_query_vector(self, vector: Sequence[float]) -> np.ndarray:
        if len(vector) != self._dimension:
            raise ValueError(
                f"query vector has dimension {len(vector)}, the store holds {self._dimension}-d "
                "vectors: embed the query with the same model as the episodes"
            )
        array = np.asarray(vector, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("query vector must be finite (no NaN or infinity)")
        return normalise(array)

    def _fuse(
        self, keyword: np.ndarray, similarity: np.ndarray | None, *, has_text: bool
    ) -> np.ndarray:
        if similarity is None:
            return keyword
        if not has_text:
            return similarity
        alpha = self._weights.hybrid_alpha
        return np.clip(alpha * similarity + (1.0 - alpha) * keyword, 0.0, 1.0)


def _keyword_scores(table: NamespaceTable, text: str, rows: np.ndarray) -> np.ndarray:
    """BM25 per candidate, divided by the best candidate's so the top one scores 1."""
    raw = table.keywords.scores(text, table.size) if text.strip() else None
    if raw is None:
        return np.zeros(len(rows), dtype=np.float64)
    scores = raw[rows]
    best = scores.max()
    return scores / best if best > 0.0 else np.zeros(len(rows), dtype=np.float64)


def _top(
    score: np.ndarray, created: np.ndarray, rows: np.ndarray, table: NamespaceTable, k: int
) -> list[int]:
    """Indices (into the candidate arrays) of the best ``k``: score, then newer, then id."""
    if len(score) > k:
        threshold = np.partition(score, len(score) - k)[len(score) - k]
        # Keep every tie at the threshold so the tie-break below sees all of them.
        pool = np.flatnonzero(score >= threshold)
    else:
        pool = np.arange(len(score))

    def key(i: int) -> tuple[float, float, str]:
        episode = table.episodes[int(rows[i])]
        assert episode is not None
        return (-float(score[i]), -float(created[i]), episode.id)

    return sorted((int(i) for i in pool), key=key)[:k]
