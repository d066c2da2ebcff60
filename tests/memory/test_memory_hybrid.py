"""Vectors, hybrid relevance, forgetting, TTL and the new episode fields in the embedded store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from memory import (
    CachedEmbedder,
    EmbeddedStore,
    Episode,
    LocalMemory,
    MemoryFilter,
    RecallQuery,
    RecallWeights,
)
from tests.memory.conftest import WordHashEmbedder

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ep(content: str, **overrides: object) -> Episode:
    fields: dict[str, object] = {
        "kind": "observation",
        "content": content,
        "agent": "executor",
        "created_at": NOW,
    }
    fields.update(overrides)
    return Episode.create(**fields)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def store_at(path: Path | None = None, *, dimension: int = 4, **weights: float) -> EmbeddedStore:
    return EmbeddedStore(
        path, weights=RecallWeights(**weights), clock=lambda: NOW, dimension=dimension
    )


def unit(*values: float) -> list[float]:
    return list(np.asarray(values) / np.linalg.norm(values))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_vector_only_recall_ranks_by_cosine() -> None:
    store = store_at(recency=0.0, importance=0.0)
    episodes = [ep("north"), ep("east"), ep("north east")]
    store.remember(episodes, [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    results = store.recall(RecallQuery(vector=(1.0, 0.1, 0.0, 0.0), k=3))
    assert [r.episode.content for r in results] == ["north", "north east", "east"]
    assert results[0].similarity == pytest.approx(float(np.dot(unit(1, 0.1), [1, 0])))
    assert results[0].keyword == 0.0
    assert results[0].relevance == results[0].similarity


def test_hybrid_relevance_is_weighted_sum_of_cosine_and_normalised_bm25() -> None:
    store = store_at(recency=0.0, importance=0.0, hybrid_alpha=0.25)
    store.remember([ep("apple pie"), ep("banana split")], [[1, 0, 0, 0], [0, 1, 0, 0]])
    results = store.recall(RecallQuery(text="banana", vector=(1.0, 0.0, 0.0, 0.0), k=2))
    by_content = {r.episode.content: r for r in results}
    assert by_content["apple pie"].relevance == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert by_content["banana split"].relevance == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)
    assert results[0].episode.content == "banana split"


def test_negative_cosine_counts_as_zero_and_missing_vectors_match_by_text() -> None:
    store = store_at(recency=0.0, importance=0.0)
    store.remember([ep("opposite")], [[-1, 0, 0, 0]])
    store.remember([ep("keyword only episode")])
    results = store.recall(RecallQuery(text="keyword", vector=(1.0, 0.0, 0.0, 0.0), k=2))
    assert [r.episode.content for r in results] == ["keyword only episode", "opposite"]
    assert results[1].similarity == 0.0
    assert results[0].similarity == 0.0 and results[0].keyword == 1.0


def test_wrong_dimensions_are_clear_errors() -> None:
    store = store_at()
    with pytest.raises(ValueError, match=r"shape \(1, 4\).*got \(1, 3\)"):
        store.remember([ep("x")], [[1, 0, 0]])
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        store.remember([ep("x"), ep("y")], [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="finite"):
        store.remember([ep("x")], [[float("nan"), 0, 0, 0]])
    with pytest.raises(ValueError, match="query vector has dimension 2"):
        store.recall(RecallQuery(vector=(1.0, 0.0)))
    assert store.count() == 0


def test_bad_filters_and_queries_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        MemoryFilter(colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        MemoryFilter.model_validate({"agent": "a", "agnet": "typo"})
    with pytest.raises(ValidationError, match="vector"):
        RecallQuery(vector=())
    with pytest.raises(ValidationError, match="content"):
        ep("")
    with pytest.raises(ValueError, match="ttl must be positive"):
        ep("x", ttl=timedelta(0))


def test_forget_by_filter_and_by_age(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    store = store_at(path)
    old = ep("old note", created_at=NOW - timedelta(days=30))
    store.remember([old, ep("keep a", agent="planner"), ep("drop b", tags=("tmp",))])
    assert store.forget(MemoryFilter(tags=("tmp",))) == 1
    assert store.forget(MemoryFilter(until=NOW - timedelta(days=7))) == 1  # older than a week
    assert store.forget(MemoryFilter(agent="nobody")) == 0
    assert store.forget(MemoryFilter(namespace="elsewhere")) == 0
    assert [r.episode.content for r in store.recall(RecallQuery(k=10))] == ["keep a"]
    reopened = store_at(path)
    assert [r.episode.content for r in reopened.recall(RecallQuery(k=10))] == ["keep a"]
    # Forgotten then remembered again: it is back, also after a reload.
    assert reopened.remember([old]) == 1
    assert store_at(path).count() == 2


def test_forget_by_ids() -> None:
    store = store_at()
    a, b = ep("a"), ep("b")
    store.remember([a, b])
    assert store.forget(MemoryFilter(ids=(a.id, "unknown"))) == 1
    assert [r.episode.id for r in store.recall(RecallQuery())] == [b.id]


def test_ttl_hides_expired_episodes_and_forget_expired_deletes_them(tmp_path: Path) -> None:
    clock = Clock()
    store = EmbeddedStore(tmp_path / "m.jsonl", clock=clock, dimension=4)
    short = ep("short lived", ttl=timedelta(hours=1))
    assert short.expires_at == NOW + timedelta(hours=1)
    store.remember([short, ep("forever")])
    assert len(store.recall(RecallQuery(k=10))) == 2
    clock.now = NOW + timedelta(hours=2)
    assert [r.episode.content for r in store.recall(RecallQuery(k=10))] == ["forever"]
    assert store.count() == 2  # expired but not yet forgotten
    assert store.forget_expired() == 1
    assert store.forget_expired() == 0
    assert EmbeddedStore(tmp_path / "m.jsonl", clock=clock, dimension=4).count() == 1


def test_last_accessed_reports_the_previous_recall() -> None:
    clock = Clock()
    store = EmbeddedStore(None, clock=clock, dimension=4)
    store.remember([ep("x")])
    [first] = store.recall(RecallQuery())
    assert first.episode.last_accessed is None
    clock.now = NOW + timedelta(minutes=5)
    [second] = store.recall(RecallQuery())
    assert second.episode.last_accessed == NOW


def test_links_model_and_vectors_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    source = ep("source")
    derived = ep("derived", kind="reflection", links=(source.id,)).model_copy(
        update={"embedding_model": "m"}
    )
    store_at(path).remember([source, derived], [[0, 0, 1, 0], [0, 3, 4, 0]])
    reopened = store_at(path)
    results = reopened.recall(RecallQuery(vector=(0.0, 0.0, 1.0, 0.0), k=2))
    assert [r.episode for r in results] == [source, derived]
    assert results[1].episode.links == (source.id,)
    assert results[1].episode.embedding_model == "m"
    assert results[1].similarity == pytest.approx(0.8)


def test_identical_rewrite_with_same_vector_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    store = store_at(path)
    episode = ep("x")
    assert store.remember([episode], [[1, 0, 0, 0]]) == 1
    size = path.stat().st_size
    assert store.remember([episode], [[2, 0, 0, 0]]) == 0  # same after normalising
    assert store.remember([episode]) == 0
    assert path.stat().st_size == size
    store.remember([episode], [[0, 1, 0, 0]])  # a new vector is a change
    assert path.stat().st_size > size


def test_filters_combine_with_vector_search() -> None:
    store = store_at(recency=0.0, importance=0.0)
    store.remember(
        [ep("a", agent="planner", kind="plan"), ep("b", agent="executor", task_id="t1")],
        [[1, 0, 0, 0], [1, 0, 0, 0]],
    )
    query = RecallQuery(vector=(1.0, 0.0, 0.0, 0.0), agent="executor", task_id="t1")
    assert [r.episode.content for r in store.recall(query)] == ["b"]
    assert (
        store.recall(RecallQuery(vector=(1.0, 0, 0, 0), kinds=("plan",)))[0].episode.content == "a"
    )


def test_many_deletes_compact_the_namespace() -> None:
    store = store_at()
    episodes = [ep(f"note {i}", step_id=str(i)) for i in range(3000)]
    vectors = np.random.default_rng(0).normal(size=(3000, 4))
    store.remember(episodes, vectors)
    assert store.forget(MemoryFilter(ids=tuple(e.id for e in episodes[:2500]))) == 2500
    table = store._tables["default"]
    assert table.size == 500 and table.dead_rows() == 0
    [best] = store.recall(RecallQuery(vector=tuple(vectors[2999]), k=1))
    assert best.episode == episodes[2999]
    assert store.recall(RecallQuery(text="note 42", k=1)) != []


def test_local_memory_embeds_once_and_recalls_by_meaning(tmp_path: Path) -> None:
    inner = WordHashEmbedder()
    memory = LocalMemory(
        EmbeddedStore(tmp_path / "m.jsonl", clock=lambda: NOW), embedder=CachedEmbedder(inner)
    )
    episodes = [ep("the invoice total is 4242"), ep("shipping goes to Berlin")]

    async def scenario() -> list[str]:
        await memory.remember(episodes)
        await memory.remember(episodes)  # a retried write: embedded from the cache
        found = await memory.recall(RecallQuery(text="invoice total", k=1))
        return [s.episode.content for s in found]

    assert run(scenario()) == ["the invoice total is 4242"]
    assert inner.embedded == 3  # two contents + one query, never again
    reopened = EmbeddedStore(tmp_path / "m.jsonl", clock=lambda: NOW)
    [hit] = reopened.recall(
        RecallQuery(vector=tuple(inner.vector("shipping Berlin").tolist()), k=1)
    )
    assert hit.episode.embedding_model == "word-hash"
    assert hit.similarity > 0.5  # the vector came back from disk, no embedder needed


def test_local_memory_forget_and_expiry() -> None:
    memory = LocalMemory(EmbeddedStore(None))
    episodes = [ep("short", ttl=timedelta(seconds=1)), ep("long", created_at=datetime.now(UTC))]

    async def scenario() -> tuple[int, int, int]:
        await memory.remember(episodes)
        expired = await memory.forget_expired()
        gone = await memory.forget(MemoryFilter(kinds=("observation",)))
        return expired, gone, await memory.count()

    assert run(scenario()) == (1, 1, 0)
