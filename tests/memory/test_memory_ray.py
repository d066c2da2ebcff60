"""The shared memory actor on a real local Ray: sharing between agents, survival of restarts."""

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from memory import Episode, RayMemory, RecallQuery, memory_actor
from protocols import ConfigurationError, DeliveryError

pytestmark = pytest.mark.ray


@pytest.fixture
def handle(ray_session: None, tmp_path: Path) -> Iterator[Any]:
    # A unique name per test: named actors outlive a test, tmp dirs do not.
    actor = memory_actor(tmp_path, name=f"troupe-memory-{uuid.uuid4().hex[:8]}")
    yield actor
    ray.kill(actor, no_restart=True)


def agent_actor() -> Any:
    # Defined in a function so Ray ships the class by value; workers cannot import test files.
    @ray.remote(num_cpus=0.1)
    class Agent:
        def __init__(self, name: str, memory: RayMemory) -> None:
            self.name = name
            self.memory = memory

        async def record(self, content: str, step: str) -> int:
            episode = Episode.create(
                kind="observation", content=content, agent=self.name, task_id="t1", step_id=step
            )
            return await self.memory.remember([episode])

        async def recall(self, text: str) -> list[tuple[str, str]]:
            found = await self.memory.recall(RecallQuery(text=text, k=1))
            return [(s.episode.agent, s.episode.content) for s in found]

    return Agent


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_agents_share_one_memory(handle: Any) -> None:
    agent = agent_actor()
    alice = agent.remote("alice", RayMemory(handle))
    bob = agent.remote("bob", RayMemory(handle))
    assert ray.get(
        [
            alice.record.remote("the invoice total is 4242 euros", "s1"),
            bob.record.remote("the shipping address is in Berlin", "s2"),
        ]
    ) == [1, 1]
    assert ray.get(bob.recall.remote("what is the invoice total?")) == [
        ("alice", "the invoice total is 4242 euros")
    ]
    assert ray.get(alice.recall.remote("shipping address")) == [
        ("bob", "the shipping address is in Berlin")
    ]
    # A retried write from either agent is not a new episode.
    assert ray.get(alice.record.remote("the invoice total is 4242 euros", "s1")) == 0
    assert run(RayMemory(handle).count()) == 2
    # Several queries in one actor call, one answer per query in order.
    many = run(
        RayMemory(handle).recall_many(
            [RecallQuery(text="shipping address", k=1), RecallQuery(text="invoice total", k=1)]
        )
    )
    assert [[s.episode.agent for s in found] for found in many] == [["bob"], ["alice"]]


def _pid_or_none(handle: Any) -> int | None:
    """The actor's process id, or None while it is down (being restarted)."""
    try:
        return int(ray.get(handle.__ray_call__.remote(lambda _: os.getpid())))
    except ray.exceptions.RayActorError:
        return None


def _kill_and_await_restart(handle: Any) -> None:
    """Kills the actor and returns once a new process answers: the kill is asynchronous, so a
    call sent right after it may still reach the old process."""
    pid_before = _pid_or_none(handle)
    ray.kill(handle, no_restart=False)
    deadline = time.monotonic() + 60
    while _pid_or_none(handle) in (pid_before, None):
        assert time.monotonic() < deadline, "the memory actor was not restarted within 60 s"
        time.sleep(0.1)


def test_nothing_is_lost_when_the_actor_is_killed(handle: Any) -> None:
    memory = RayMemory(handle)
    episodes = [
        Episode.create(kind="action", content=f"ran step {i}", agent="executor", step_id=str(i))
        for i in range(3)
    ]
    assert run(memory.remember(episodes)) == 3

    _kill_and_await_restart(handle)

    assert run(memory.count()) == 3  # the new process reloaded the file
    found = run(memory.recall(RecallQuery(text="ran step 2", k=3)))
    assert found[0].episode == episodes[2]
    assert run(memory.remember(episodes)) == 0


def test_get_or_create_returns_the_same_actor(handle: Any, tmp_path: Path) -> None:
    name = ray.get(handle.__ray_call__.remote(lambda _: ray.get_runtime_context().get_actor_name()))
    again = memory_actor(tmp_path, name=name)
    assert again._actor_id == handle._actor_id
    with pytest.raises(ConfigurationError, match="already runs on"):
        memory_actor(tmp_path / "elsewhere", name=name)


def _wait_until_dead(handle: Any) -> None:
    for _ in range(100):
        try:
            ray.get(handle.count.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor still answers")


def test_dead_actor_is_a_delivery_error(ray_session: None, tmp_path: Path) -> None:
    handle = memory_actor(tmp_path, name=f"troupe-memory-{uuid.uuid4().hex[:8]}")
    ray.kill(handle, no_restart=True)
    _wait_until_dead(handle)  # ray.kill returns before the actor is gone
    with pytest.raises(DeliveryError, match="memory actor died") as exc:
        run(RayMemory(handle).count())
    assert exc.value.retryable is False


def test_vectors_forget_and_ttl_through_the_actor_survive_a_restart(handle: Any) -> None:
    from memory import CachedEmbedder, MemoryFilter
    from tests.memory.conftest import WordHashEmbedder

    inner = WordHashEmbedder()
    memory = RayMemory(handle, embedder=CachedEmbedder(inner))
    episodes = [
        Episode.create(kind="observation", content=text, agent="a", step_id=str(i))
        for i, text in enumerate(["invoice total 4242", "shipping to Berlin", "scratch note"])
    ]
    assert run(memory.remember(episodes)) == 3
    assert run(memory.forget(MemoryFilter(ids=(episodes[2].id,)))) == 1
    assert run(memory.forget_expired()) == 0

    _kill_and_await_restart(handle)

    # After the restart: no re-embedding, vector search still works from the persisted vectors.
    query = RecallQuery(vector=tuple(inner.vector("Berlin shipping").tolist()), k=3)
    found = run(RayMemory(handle).recall(query))
    assert found[0].episode.content == "shipping to Berlin"
    assert found[0].similarity > 0.5
    assert found[0].episode.embedding_model == "word-hash"
    assert run(memory.count()) == 2
    assert inner.embedded == 3
    with pytest.raises(ValueError, match="query vector has dimension 2"):
        run(memory.recall(RecallQuery(vector=(1.0, 0.0))))


@pytest.mark.parametrize(("lanes", "over_lanes"), [(True, 4), (False, 0)])
def test_calls_from_this_node_go_over_the_actors_lane_unless_lanes_are_off(
    handle: Any, lanes: bool, over_lanes: int
) -> None:
    memory = RayMemory(handle, lanes=lanes)
    episode = Episode.create(kind="observation", content="the vat rate is 19 percent", agent="a")

    async def calls() -> tuple[int, list[Any], list[list[Any]], int]:
        return (
            await memory.remember([episode]),
            await memory.recall(RecallQuery(text="vat rate")),
            await memory.recall_many(
                [RecallQuery(text="vat"), RecallQuery(text="vat", kinds=("tool_result",))]
            ),
            await memory.count(),
        )

    stored, found, many, count = run(calls())
    assert (stored, count) == (1, 1)
    assert [s.episode.id for s in found] == [episode.id]
    assert [[s.episode.id for s in f] for f in many] == [[episode.id], []]
    assert ray.get(handle.lane_calls.remote()) == over_lanes
    with pytest.raises(ValueError, match="query vector has dimension 2"):  # the store's own error
        run(memory.recall(RecallQuery(vector=(1.0, 0.0))))
