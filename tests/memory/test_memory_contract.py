"""One contract for every ``EpisodicMemory`` backend: the embedded store, Weaviate through the
stand-in (the real ``weaviate-client`` on the wire), and a real Weaviate when ``WEAVIATE_URL``
is set (e.g. ``WEAVIATE_URL=http://localhost:8080 WEAVIATE_GRPC_PORT=50051``; skipped, with
the reason shown, otherwise)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from memory import (
    EmbeddedStore,
    Episode,
    EpisodicMemory,
    LocalMemory,
    MemoryFilter,
    RecallQuery,
    RecallWeights,
    WeaviateMemory,
    WeaviateSettings,
)
from tests.memory.weaviate_standin import WeaviateStandIn

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DIMENSION = 4


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def standin() -> Iterator[WeaviateStandIn]:
    server = WeaviateStandIn()
    yield server
    server.stop()


def _weaviate(url: str, grpc_port: int, clock: Clock, **kwargs: Any) -> WeaviateMemory:
    settings = WeaviateSettings(
        url=url,
        grpc_port=grpc_port,
        collection=f"TroupeContract_{uuid.uuid4().hex[:8]}",
        dimension=DIMENSION,
        **kwargs,
    )
    return WeaviateMemory(settings, weights=RecallWeights(), clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["embedded", "weaviate-standin", "weaviate-real"])
def memory(
    request: pytest.FixtureRequest, clock: Clock, standin: WeaviateStandIn
) -> Iterator[EpisodicMemory]:
    if request.param == "embedded":
        yield LocalMemory(EmbeddedStore(None, clock=clock, dimension=DIMENSION))
        return
    if request.param == "weaviate-standin":
        backend = _weaviate(standin.url, standin.grpc_port, clock)
        yield backend
        backend.close()
        assert standin.unexpected == [], "the client made calls the stand-in does not know"
        return
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip("WEAVIATE_URL is not set: no real Weaviate to run the contract against")
    backend = _weaviate(
        url,
        int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
        clock,
        api_key=os.environ.get("WEAVIATE_API_KEY"),
    )
    yield backend
    backend._client.collections.delete(backend._settings.collection)
    backend.close()


def ep(content: str, **overrides: object) -> Episode:
    fields: dict[str, object] = {
        "kind": "observation",
        "content": content,
        "agent": "executor",
        "created_at": NOW,
    }
    fields.update(overrides)
    return Episode.create(**fields)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def recall(memory: EpisodicMemory, **query: Any) -> list[str]:
    return [s.episode.content for s in run(memory.recall(RecallQuery(k=20, **query)))]


def test_remember_is_idempotent_and_counted(memory: EpisodicMemory) -> None:
    batch = [ep("one", step_id="1"), ep("two", step_id="2"), ep("two again", step_id="2")]
    assert run(memory.remember(batch)) == 2  # the last of one id wins within a batch
    assert run(memory.remember(batch)) == 0
    assert run(memory.count()) == 2
    assert sorted(recall(memory)) == ["one", "two again"]


def test_episode_round_trips_with_every_field(memory: EpisodicMemory) -> None:
    source = ep("source fact")
    derived = ep(
        "derived reflection",
        kind="reflection",
        task_id="t1",
        step_id="s1",
        importance=0.9,
        tags=("a", "b"),
        provenance="tool",
        trusted=True,
        metadata={"plan": '{"steps": []}'},
        links=(source.id,),
        ttl=timedelta(days=1),
    ).model_copy(update={"embedding_model": "m"})
    run(memory.remember([source, derived], vectors=[[1, 0, 0, 0], [0, 1, 0, 0]]))
    [found] = run(memory.recall(RecallQuery(ids=(derived.id,))))
    assert found.episode == derived


def test_text_recall_ranks_the_matching_episode_first(memory: EpisodicMemory) -> None:
    run(
        memory.remember(
            [
                ep("the weather in Paris is sunny"),
                ep("database migration failed with a lock timeout"),
                ep("sent the weekly report"),
            ]
        )
    )
    assert recall(memory, text="why did the database migration fail")[0].startswith("database")


def test_recall_many_answers_each_query_as_recall_would(memory: EpisodicMemory) -> None:
    run(memory.remember([ep("the weather in Paris is sunny"), ep("sent the weekly report")]))
    queries = [RecallQuery(text="weather in Paris"), RecallQuery(text="weekly report", k=1)]
    many = run(memory.recall_many(queries))
    one_by_one = [run(memory.recall(q)) for q in queries]
    assert [[s.episode.id for s in found] for found in many] == [
        [s.episode.id for s in found] for found in one_by_one
    ]
    assert many[1][0].episode.content == "sent the weekly report"
    assert run(memory.recall_many([])) == []


def test_vector_recall_ranks_the_nearest_first(memory: EpisodicMemory) -> None:
    run(
        memory.remember(
            [ep("north"), ep("east"), ep("north-east")],
            vectors=[[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]],
        )
    )
    found = run(memory.recall(RecallQuery(vector=(1.0, 0.2, 0.0, 0.0), k=3)))
    assert [s.episode.content for s in found] == ["north", "north-east", "east"]
    assert found[0].relevance > found[2].relevance


def test_hybrid_recall_prefers_what_matches_both(memory: EpisodicMemory) -> None:
    run(
        memory.remember(
            [ep("banana bread recipe"), ep("banana split"), ep("apple pie")],
            vectors=[[1, 0, 0, 0], [0, 1, 0, 0], [1, 0.1, 0, 0]],
        )
    )
    found = recall(memory, text="banana", vector=(1.0, 0.0, 0.0, 0.0))
    assert found[0] == "banana bread recipe"


def test_filters(memory: EpisodicMemory) -> None:
    a = ep("report a", kind="action", agent="planner", task_id="t1", tags=("x", "y"))
    run(
        memory.remember(
            [
                a,
                ep("report b", agent="planner", task_id="t1", tags=("x",)),
                ep("report c", kind="action", task_id="t2", tags=("y",)),
                ep("report d", created_at=NOW - timedelta(days=3), task_id="t2"),
            ]
        )
    )

    def found(**filters: Any) -> set[str]:
        return {c.removeprefix("report ") for c in recall(memory, text="report", **filters)}

    assert found() == {"a", "b", "c", "d"}
    assert found(kinds=("action",)) == {"a", "c"}
    assert found(agent="planner") == {"a", "b"}
    assert found(task_id="t2") == {"c", "d"}
    assert found(tags=("x", "y")) == {"a"}
    assert found(since=NOW - timedelta(days=1)) == {"a", "b", "c"}
    assert found(until=NOW) == {"d"}
    assert found(ids=(a.id,)) == {"a"}
    assert found(agent="planner", kinds=("action",), tags=("y",)) == {"a"}
    assert found(agent="nobody") == set()


def test_namespaces_are_isolated(memory: EpisodicMemory) -> None:
    run(memory.remember([ep("secret plan", namespace="team-a"), ep("public", namespace="team-b")]))
    assert recall(memory, text="plan", namespace="team-a") == ["secret plan"]
    assert recall(memory, namespace="team-a") == ["secret plan"]
    assert "secret plan" not in recall(memory, text="secret plan", namespace="team-b")
    assert recall(memory, text="plan") == []
    assert [run(memory.count(n)) for n in ("team-a", "team-b", "default")] == [1, 1, 0]
    assert run(memory.forget(MemoryFilter(namespace="team-a"))) == 1
    assert run(memory.count("team-b")) == 1


def test_forget_by_filter_and_age(memory: EpisodicMemory) -> None:
    run(
        memory.remember(
            [
                ep("ancient", created_at=NOW - timedelta(days=30)),
                ep("scratch", tags=("tmp",)),
                ep("keep"),
            ]
        )
    )
    assert run(memory.forget(MemoryFilter(tags=("tmp",)))) == 1
    assert run(memory.forget(MemoryFilter(until=NOW - timedelta(days=7)))) == 1
    assert run(memory.forget(MemoryFilter(agent="nobody"))) == 0
    assert recall(memory) == ["keep"]


def test_ttl(memory: EpisodicMemory, clock: Clock) -> None:
    run(memory.remember([ep("short lived", ttl=timedelta(hours=1)), ep("forever")]))
    assert sorted(recall(memory)) == ["forever", "short lived"]
    clock.now = NOW + timedelta(hours=2)
    assert recall(memory) == ["forever"]
    assert run(memory.count()) == 2
    assert run(memory.forget_expired()) == 1
    assert run(memory.count()) == 1


def test_bad_input_is_a_clear_error(memory: EpisodicMemory) -> None:
    with pytest.raises(ValueError, match=r"shape \(1, 4\)"):
        run(memory.remember([ep("x")], vectors=[[1.0, 0.0]]))
    with pytest.raises(ValueError, match="query vector has dimension 3"):
        run(memory.recall(RecallQuery(vector=(1.0, 0.0, 0.0))))
    with pytest.raises(ValidationError, match="non-whitespace"):
        ep("  ")
    with pytest.raises(ValidationError, match="Extra inputs"):
        MemoryFilter.model_validate({"agnet": "typo"})
    assert run(memory.count()) == 0


def test_unreachable_weaviate_is_a_configuration_error() -> None:
    from protocols import ConfigurationError

    with pytest.raises(ConfigurationError, match="not reachable at http://127.0.0.1:9"):
        WeaviateMemory(WeaviateSettings(url="http://127.0.0.1:9", grpc_port=9, timeout_s=2))
    with pytest.raises(ConfigurationError, match="url must be http"):
        WeaviateMemory(WeaviateSettings(url="localhost:8080"))


def test_api_key_is_sent_and_required(clock: Clock) -> None:
    from protocols import ConfigurationError

    server = WeaviateStandIn(api_key="secret")
    try:
        with pytest.raises(ConfigurationError, match="not reachable"):
            _weaviate(server.url, server.grpc_port, clock, api_key="wrong")
        backend = _weaviate(server.url, server.grpc_port, clock, api_key="secret")
        assert run(backend.remember([ep("x")])) == 1
        assert run(backend.count()) == 1
        backend.close()
    finally:
        server.stop()
    assert server.unexpected == []


def test_standin_fails_loudly_on_what_it_does_not_implement(standin: WeaviateStandIn) -> None:
    backend = _weaviate(standin.url, standin.grpc_port, Clock())
    run(backend.remember([ep("x")]))
    tenant = backend._collection.with_tenant("default")
    with pytest.raises(Exception, match="does not implement Search: Search with near_text"):
        tenant.query.near_text(query="x", limit=1)
    with pytest.raises(Exception, match="501"):
        backend._client.cluster.nodes()
    backend.close()
    assert standin.unexpected == ["Search: Search with near_text", "REST GET /v1/nodes"]
    standin.unexpected.clear()
