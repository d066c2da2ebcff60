"""EmbeddedStore and LocalMemory: ranking, filters, namespaces, idempotence, persistence."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memory import EmbeddedStore, Episode, LocalMemory, RecallQuery, RecallWeights

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


def store_at(path: Path | None = None, **weights: float) -> EmbeddedStore:
    return EmbeddedStore(path, weights=RecallWeights(**weights), clock=lambda: NOW)


def contents(store: EmbeddedStore, query: RecallQuery) -> list[str]:
    return [s.episode.content for s in store.recall(query)]


def test_relevant_episode_ranks_first() -> None:
    store = store_at()
    store.remember(
        [
            ep("the weather in Paris is sunny today"),
            ep("database migration failed with a lock timeout on table users"),
            ep("sent the weekly report to the team"),
        ]
    )
    results = store.recall(RecallQuery(text="why did the database migration fail?", k=3))
    assert results[0].episode.content.startswith("database migration failed")
    assert results[0].relevance == 1.0
    assert results[0].score > results[1].score
    # "the" occurs elsewhere, so the others may match a little, never as much.
    assert all(r.relevance < 0.5 for r in results[1:])


def test_score_is_weighted_sum_of_components() -> None:
    store = store_at(relevance=2.0, recency=0.5, importance=3.0)
    store.remember([ep("alpha beta", importance=0.2, created_at=NOW - timedelta(hours=24))])
    [result] = store.recall(RecallQuery(text="alpha"))
    assert result.relevance == 1.0
    assert result.recency == pytest.approx(0.5)  # one half-life old
    assert result.importance == 0.2
    assert result.score == pytest.approx(2.0 * 1.0 + 0.5 * 0.5 + 3.0 * 0.2)


def test_recency_breaks_equal_relevance() -> None:
    store = store_at()
    old = ep("deploy succeeded", step_id="old", created_at=NOW - timedelta(hours=48))
    new = ep("deploy succeeded", step_id="new", created_at=NOW - timedelta(hours=1))
    store.remember([old, new])
    results = store.recall(RecallQuery(text="deploy"))
    assert [r.episode.id for r in results] == [new.id, old.id]
    assert results[1].recency == pytest.approx(0.25)


def test_importance_ranks_when_it_is_the_only_weight() -> None:
    store = store_at(relevance=0.0, recency=0.0)
    store.remember([ep("low", importance=0.1), ep("high", importance=0.9), ep("mid")])
    assert contents(store, RecallQuery(text="low")) == ["high", "mid", "low"]


def test_empty_text_ranks_by_recency_and_importance_and_k_limits() -> None:
    store = store_at()
    store.remember([ep(f"note {i}", created_at=NOW - timedelta(hours=i)) for i in range(10)])
    results = store.recall(RecallQuery(text="", k=3))
    assert [r.episode.content for r in results] == ["note 0", "note 1", "note 2"]
    assert all(r.relevance == 0.0 for r in results)


def test_filters_all_apply() -> None:
    store = store_at()
    store.remember(
        [
            ep("report a", kind="action", agent="planner", task_id="t1", tags=("x", "y")),
            ep("report b", kind="observation", agent="planner", task_id="t1", tags=("x",)),
            ep("report c", kind="action", agent="executor", task_id="t2", tags=("y",)),
            ep("report d", created_at=NOW - timedelta(days=3), task_id="t2"),
        ]
    )

    def found(**filters: object) -> set[str]:
        query = RecallQuery(text="report", k=100, **filters)  # type: ignore[arg-type]
        return {c.removeprefix("report ") for c in contents(store, query)}

    assert found() == {"a", "b", "c", "d"}
    assert found(kinds=("action",)) == {"a", "c"}
    assert found(kinds=("action", "observation")) == {"a", "b", "c", "d"}
    assert found(agent="planner") == {"a", "b"}
    assert found(task_id="t2") == {"c", "d"}
    assert found(tags=("x",)) == {"a", "b"}
    assert found(tags=("x", "y")) == {"a"}
    assert found(since=NOW - timedelta(days=1)) == {"a", "b", "c"}
    assert found(until=NOW) == {"d"}  # until is exclusive
    assert found(since=NOW, until=NOW + timedelta(seconds=1)) == {"a", "b", "c"}
    assert found(agent="planner", kinds=("action",), tags=("y",)) == {"a"}
    assert found(agent="nobody") == set()


def test_namespaces_are_isolated() -> None:
    store = store_at()
    store.remember([ep("secret plan", namespace="team-a"), ep("public plan", namespace="team-b")])
    store.remember([ep("shared words", namespace="team-a"), ep("shared words", namespace="team-b")])
    a = store.recall(RecallQuery(text="plan words", namespace="team-a", k=10))
    assert {s.episode.content for s in a} == {"secret plan", "shared words"}
    assert all(s.episode.namespace == "team-a" for s in a)
    assert (store.count("team-a"), store.count("team-b"), store.count()) == (2, 2, 0)
    assert store.recall(RecallQuery(text="plan")) == []


def test_remember_is_idempotent_by_id(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    store = store_at(path)
    batch = [ep("one", step_id="s1"), ep("two", step_id="s2")]
    assert store.remember(batch) == 2
    size = path.stat().st_size
    assert store.remember(batch) == 0
    assert path.stat().st_size == size  # identical re-writes do not grow the file
    assert store.count() == 2
    # A retried step with new content replaces the old episode, never duplicates it.
    assert store.remember([ep("one, retried", step_id="s1")]) == 0
    assert store.count() == 2
    assert sorted(contents(store, RecallQuery(text=""))) == ["one, retried", "two"]
    assert sorted(contents(store_at(path), RecallQuery(text=""))) == ["one, retried", "two"]


def test_duplicates_within_a_batch_count_once() -> None:
    store = store_at()
    assert store.remember([ep("same"), ep("same"), ep("other")]) == 2
    assert store.count() == 2


def test_new_store_on_same_path_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "memory.jsonl"
    first = store_at(path)
    first.remember([ep(f"fact {i}", tags=(str(i),), importance=i / 10) for i in range(5)])
    first.remember([ep("elsewhere", namespace="other")])
    second = store_at(path)
    assert second.count() == 5
    assert second.count("other") == 1
    query = RecallQuery(text="fact 3", k=5)
    assert second.recall(query) == first.recall(query)


def test_corrupt_trailing_line_is_skipped_and_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "memory.jsonl"
    store_at(path).remember([ep("kept one"), ep("kept two")])
    with path.open("ab") as file:
        file.write(b'{"op": "put", "episode": {"id": "torn", "cont')  # crash mid-write

    with caplog.at_level(logging.WARNING, logger="memory"):
        reopened = store_at(path)
    assert reopened.count() == 2
    assert "torn last record" in caplog.text
    reopened.remember([ep("after the crash")])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory"):
        third = store_at(path)
    assert caplog.text == ""  # the torn bytes are gone; the new record is on a clean line
    assert sorted(contents(third, RecallQuery(text=""))) == [
        "after the crash",
        "kept one",
        "kept two",
    ]


def test_corrupt_middle_line_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "memory.jsonl"
    store_at(path).remember([ep("first")])
    with path.open("ab") as file:
        file.write(b"\x00\x00 not json\n")
    store_at(path).remember([ep("last")])
    with caplog.at_level(logging.WARNING, logger="memory"):
        store = store_at(path)
    assert sorted(contents(store, RecallQuery(text=""))) == ["first", "last"]
    assert ":2: skipping unreadable memory record" in caplog.text


def test_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    store_at(path).remember([ep("complete")])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    store = store_at(path)
    assert store.count() == 1
    store.remember([ep("next")])
    assert sorted(contents(store_at(path), RecallQuery(text=""))) == ["complete", "next"]


def test_local_memory_implements_the_async_interface(tmp_path: Path) -> None:
    memory = LocalMemory(store_at(tmp_path / "m.jsonl"))

    async def scenario() -> tuple[int, int, list[str], int]:
        stored = await memory.remember([ep("tool returned 42", kind="tool_result"), ep("hi")])
        again = await memory.remember([ep("hi")])
        found = await memory.recall(RecallQuery(text="what did the tool return", k=1))
        return stored, again, [s.episode.content for s in found], await memory.count()

    assert asyncio.run(scenario()) == (2, 0, ["tool returned 42"], 2)
