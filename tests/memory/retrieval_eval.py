"""Retrieval quality on the labelled set in ``data/retrieval.json``: MRR and recall@5.

Shared by the quality test and ``bench/memory.py``. Ranking uses relevance only (recency and
importance weights 0) so the numbers measure retrieval, not the other score components.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from memory import (
    CachedEmbedder,
    EmbeddedStore,
    Embedder,
    Episode,
    LocalMemory,
    RecallQuery,
    RecallWeights,
)

DATA = Path(__file__).parent / "data" / "retrieval.json"
Mode = Literal["keyword", "vector", "hybrid"]


def load() -> tuple[list[Episode], list[tuple[str, set[str]]]]:
    """The labelled episodes (id derived from each key) and (query, relevant ids) pairs."""
    data = json.loads(DATA.read_text())
    when = datetime(2025, 1, 1, tzinfo=UTC)
    by_key = {
        item["key"]: Episode.create(
            kind=item["kind"],
            content=item["content"],
            agent="eval",
            key=item["key"],
            created_at=when,
        )
        for item in data["episodes"]
    }
    queries = [(q["text"], {by_key[k].id for k in q["relevant"]}) for q in data["queries"]]
    return list(by_key.values()), queries


def evaluate(embedder: Embedder | None, mode: Mode) -> dict[str, float]:
    """Returns ``{"mrr": ..., "recall_at_5": ...}`` for one retrieval mode."""
    return asyncio.run(_evaluate(embedder, mode))


async def _evaluate(embedder: Embedder | None, mode: Mode) -> dict[str, float]:
    cached = None if embedder is None else CachedEmbedder(embedder)
    weights = RecallWeights(recency=0.0, importance=0.0)
    memory = LocalMemory(EmbeddedStore(None, weights=weights), embedder=cached)
    episodes, queries = load()
    await memory.remember(episodes)
    reciprocal, recalled = [], []
    for text, relevant in queries:
        query = RecallQuery(text=text, k=10)
        if mode == "vector":
            assert cached is not None
            [vector] = await cached.embed([text])
            query = RecallQuery(vector=tuple(float(x) for x in vector), k=10)
        elif mode == "keyword":
            query = query.model_copy(update={"vector": None})
            memory = LocalMemory(memory._store)  # no embedder: BM25 only
        ranked = [s.episode.id for s in await memory.recall(query)]
        first = next((i for i, episode_id in enumerate(ranked) if episode_id in relevant), None)
        reciprocal.append(0.0 if first is None else 1.0 / (first + 1))
        recalled.append(len(relevant & set(ranked[:5])) / len(relevant))
    return {
        "mrr": round(sum(reciprocal) / len(reciprocal), 4),
        "recall_at_5": round(sum(recalled) / len(recalled), 4),
    }
