"""One semantic suite, run against the in-process bus and the Ray bus."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from protocols import (
    DeliveryError,
    Envelope,
    InProcessBus,
    RayBus,
    RemoteAgentError,
    Step,
    StepAssigned,
    StepResult,
)
from tests.protocols.bus_consumers import RecordingConsumer


def _envelope(step_id: str, topic: str = "work") -> Envelope:
    step = Step(id=step_id, description="d", tool="answer")
    return Envelope.wrap(
        StepAssigned(task_id="t1", goal="g", step=step), sender="test", topic=topic
    )


class Harness:
    """Builds consumers for one bus implementation and reads what they saw."""

    def __init__(self, kind: str):
        self.kind = kind
        self.bus: Any = InProcessBus() if kind == "inprocess" else RayBus()
        self.consumers: dict[str, Any] = {}

    def add(self, topic: str, group: str, name: str, behaviour: str = "echo") -> None:
        if self.kind == "inprocess":
            consumer: Any = RecordingConsumer(name, behaviour)
        else:
            import ray

            consumer = ray.remote(RecordingConsumer).options(num_cpus=0).remote(name, behaviour)
        self.consumers[name] = consumer
        self.bus.subscribe(topic, consumer, group=group)

    def seen(self, name: str) -> list[str]:
        consumer = self.consumers[name]
        if self.kind == "inprocess":
            return list(consumer.seen())
        import ray

        return list(ray.get(consumer.seen.remote()))

    def kill(self, name: str) -> None:
        import ray

        ray.kill(self.consumers[name], no_restart=True)


@pytest.fixture(params=["inprocess", pytest.param("ray", marks=pytest.mark.ray)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    h = Harness(request.param)
    yield h
    if request.param == "ray":
        import ray

        for consumer in h.consumers.values():
            ray.kill(consumer, no_restart=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_request_returns_the_reply_and_round_robins_a_group(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")
    replies = [run(harness.bus.request(_envelope(f"s{i}"))) for i in range(4)]
    assert [r.payload.output for r in replies] == ["a", "b", "a", "b"]
    assert all(isinstance(r.payload, StepResult) for r in replies)
    assert harness.seen("a") == ["s0", "s2"]
    assert harness.seen("b") == ["s1", "s3"]


def test_reply_is_caused_by_the_request(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    request = _envelope("s1")
    reply = run(harness.bus.request(request))
    assert reply.causation_id == request.message_id
    assert reply.task_id == "t1"


def test_publish_reaches_one_member_of_every_group(harness: Harness) -> None:
    harness.add("work", "g1", "a1")
    harness.add("work", "g1", "a2")
    harness.add("work", "g2", "b1")
    run(harness.bus.publish(_envelope("s1")))
    assert harness.seen("a1") + harness.seen("a2") == ["s1"]
    assert harness.seen("b1") == ["s1"]


def test_publish_keeps_order_for_one_consumer(harness: Harness) -> None:
    harness.add("work", "g", "a")

    async def publish_all() -> None:
        for i in range(30):
            await harness.bus.publish(_envelope(f"s{i}"))

    run(publish_all())
    assert harness.seen("a") == [f"s{i}" for i in range(30)]


def test_publish_without_subscribers_is_a_no_op(harness: Harness) -> None:
    run(harness.bus.publish(_envelope("s1", topic="nobody")))


def test_error_report_reply_raises_remote_agent_error(harness: Harness) -> None:
    harness.add("work", "pool", "a", "error")
    with pytest.raises(RemoteAgentError) as info:
        run(harness.bus.request(_envelope("s1")))
    assert info.value.retryable
    assert info.value.report.code == "model_unavailable"


def test_request_needs_exactly_one_group(harness: Harness) -> None:
    with pytest.raises(DeliveryError, match="found none"):
        run(harness.bus.request(_envelope("s1")))
    harness.add("work", "g1", "a")
    harness.add("work", "g2", "b")
    with pytest.raises(DeliveryError, match="found g1, g2"):
        run(harness.bus.request(_envelope("s1")))


def test_request_without_reply_is_an_error(harness: Harness) -> None:
    harness.add("work", "pool", "a", "silent")
    with pytest.raises(DeliveryError, match="returned no reply"):
        run(harness.bus.request(_envelope("s1")))


def test_request_times_out(harness: Harness) -> None:
    harness.add("work", "pool", "a", "slow")
    with pytest.raises(DeliveryError) as info:
        run(harness.bus.request(_envelope("s1"), timeout=0.3))
    assert info.value.code == "timeout"
    assert info.value.retryable


def test_crashing_handler_is_a_delivery_error(harness: Harness) -> None:
    harness.add("work", "pool", "a", "crash")
    with pytest.raises(DeliveryError) as info:
        run(harness.bus.request(_envelope("s1")))
    assert info.value.code == "consumer_crashed"
    assert "handler bug" in info.value.message


@pytest.mark.ray
def test_dead_member_is_skipped_for_the_next(ray_session: None) -> None:
    harness = Harness("ray")
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")
    harness.kill("a")
    replies = [run(harness.bus.request(_envelope(f"s{i}"))) for i in range(3)]
    assert [r.payload.output for r in replies] == ["b", "b", "b"]
    harness.kill("b")
    with pytest.raises(DeliveryError, match="no live member") as info:
        run(harness.bus.request(_envelope("s9")))
    assert info.value.retryable
