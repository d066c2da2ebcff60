"""One semantic suite, run against the in-process bus and the Ray bus."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from protocols import (
    BackPressureError,
    BusConfig,
    ConsumerHost,
    DeliveryError,
    Envelope,
    InMemoryDeadLetters,
    InProcessBus,
    RayBus,
    RayDeadLetters,
    RemoteAgentError,
    Step,
    StepAssigned,
    StepResult,
    dead_letter_actor,
)
from tests.protocols.bus_consumers import RecordingActor, RecordingConsumer


def _envelope(step_id: str, topic: str = "work", task_id: str = "t1") -> Envelope:
    step = Step(id=step_id, description="d", tool="answer")
    return Envelope.wrap(
        StepAssigned(task_id=task_id, goal="g", step=step), sender="test", topic=topic
    )


class Harness:
    """Builds a bus and its consumers for one implementation, and reads what they saw."""

    def __init__(self, kind: str, config: BusConfig | None = None, *, letters_path: str = ""):
        self.kind = kind
        self.config = config or BusConfig(retry_backoff_s=0.001)
        if kind == "ray-no-lanes":  # every delivery a Ray call, as with lanes off or off-node
            self.config = self.config.model_copy(update={"direct_lanes": False})
        self.consumers: dict[str, Any] = {}
        if kind == "inprocess":
            self.letters: Any = InMemoryDeadLetters()
            self.bus: Any = InProcessBus(self.config, dead_letters=self.letters)
        else:
            name = f"test-dead-letters-{uuid.uuid4().hex[:8]}"
            self.letters_actor = dead_letter_actor(letters_path or None, name=name)
            self.letters = RayDeadLetters(self.letters_actor)
            self.bus = RayBus(self.letters, self.config)

    def add(
        self,
        topic: str,
        group: str,
        name: str,
        behaviour: str = "echo",
        *,
        delay: float = 2.0,
        ledger: Any = None,
        capacity: int = 1024,
    ) -> None:
        if self.kind == "inprocess":
            consumer = RecordingConsumer(name, behaviour, delay=delay, ledger=ledger)
            member: Any = ConsumerHost(consumer, name=name, capacity=capacity)
            self.consumers[name] = (consumer, member)
        else:
            import ray

            member = (
                ray.remote(RecordingActor)
                .options(num_cpus=0, max_concurrency=1000)
                .remote(name, behaviour, delay, ledger, capacity)
            )
            self.consumers[name] = member
        self.bus.subscribe(topic, member, group=group)

    def seen(self, name: str) -> list[str]:
        if self.kind == "inprocess":
            return self.consumers[name][0].seen()
        import ray

        return list(ray.get(self.consumers[name].seen.remote()))

    def heal(self, name: str) -> None:
        if self.kind == "inprocess":
            self.consumers[name][0].behaviour = "echo"
        else:
            import ray

            ray.get(self.consumers[name].heal.remote())

    def remove(self, name: str) -> None:
        """The member goes away: closed in-process, killed on Ray."""
        if self.kind == "inprocess":
            self.consumers[name][1].close()
        else:
            import ray

            actor = self.consumers[name]
            ray.kill(actor, no_restart=True)
            # ray.kill only asks for the kill: a call already on its way may still be answered.
            # The member is gone once a call fails.
            deadline = time.monotonic() + 30
            while True:
                try:
                    ray.get(actor.lane_calls.remote(), timeout=10)
                except ray.exceptions.RayActorError:
                    return
                assert time.monotonic() < deadline, f"{name} outlived its kill"
                time.sleep(0.05)

    def cleanup(self) -> None:
        if self.kind != "inprocess":
            import ray

            for consumer in self.consumers.values():
                ray.kill(consumer, no_restart=True)
            ray.kill(self.letters_actor, no_restart=True)


RAY_KINDS = ["ray", "ray-no-lanes"]
"""The Ray bus with its members reached over lanes (the default, on one node), and through Ray
calls only."""


@pytest.fixture(params=["inprocess", *(pytest.param(k, marks=pytest.mark.ray) for k in RAY_KINDS)])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param != "inprocess":
        request.getfixturevalue("ray_session")
    return str(request.param)


@pytest.fixture
def harness(kind: str) -> Iterator[Harness]:
    h = Harness(kind)
    yield h
    h.cleanup()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- routing ----------------------------------------------------------------------------------


def test_request_returns_the_reply_and_round_robins_a_group(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")
    replies = [run(harness.bus.request(_envelope(f"s{i}"))) for i in range(4)]
    assert [r.payload.output for r in replies] == ["a", "b", "a", "b"]
    assert all(isinstance(r.payload, StepResult) for r in replies)
    assert harness.seen("a") == ["s0", "s2"]
    assert harness.seen("b") == ["s1", "s3"]


@pytest.mark.ray
@pytest.mark.parametrize(("ray_kind", "over_lanes"), [("ray", 3), ("ray-no-lanes", 0)])
def test_a_member_on_this_node_is_reached_over_its_lane_unless_lanes_are_off(
    ray_session: None, ray_kind: str, over_lanes: int
) -> None:
    import ray

    harness = Harness(ray_kind)
    try:
        harness.add("work", "pool", "a")
        for i in range(2):
            run(harness.bus.request(_envelope(f"s{i}")))
        run(harness.bus.publish_batch([_envelope("s2", task_id="t2")]))
        assert harness.seen("a") == ["s0", "s1", "s2"]
        assert ray.get(harness.consumers["a"].lane_calls.remote()) == over_lanes
    finally:
        harness.cleanup()


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
    stats = harness.bus.stats()
    assert stats.group("work", "g1").delivered == 1
    assert stats.group("work", "g2").delivered == 1


def test_publish_without_subscribers_is_a_no_op(harness: Harness) -> None:
    run(harness.bus.publish(_envelope("s1", topic="nobody")))


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


# -- failures, redelivery, dead letters -------------------------------------------------------


def test_error_report_reply_raises_remote_agent_error(harness: Harness) -> None:
    harness.add("work", "pool", "a", "error")
    with pytest.raises(RemoteAgentError) as info:
        run(harness.bus.request(_envelope("s1")))
    assert info.value.retryable
    assert info.value.report.code == "model_unavailable"
    assert harness.seen("a") == ["s1"]  # requests are not retried on handler errors


def test_crashing_handler_comes_back_as_a_report_not_a_traceback(harness: Harness) -> None:
    harness.add("work", "pool", "a", "crash")
    with pytest.raises(RemoteAgentError) as info:
        run(harness.bus.request(_envelope("s1")))
    assert info.value.report.code == "internal_error"
    assert "handler bug" in info.value.report.message
    assert not info.value.retryable


def test_a_failed_publish_is_redelivered_until_handled(harness: Harness) -> None:
    harness.add("work", "pool", "a", "flaky")
    run(harness.bus.publish(_envelope("s1")))
    assert harness.seen("a") == ["s1", "s1"]
    stats = harness.bus.stats().group("work", "pool")
    assert (stats.delivered, stats.redeliveries, stats.dead_lettered) == (1, 1, 0)
    assert run(harness.letters.list()) == []


def test_after_max_attempts_a_message_is_dead_and_can_be_replayed(harness: Harness) -> None:
    harness.add("work", "pool", "a", "error")
    envelope = _envelope("s1")
    run(harness.bus.publish(envelope))
    assert harness.seen("a") == ["s1"] * harness.config.max_attempts
    letters = run(harness.letters.list("work"))
    assert [d.envelope.message_id for d in letters] == [envelope.message_id]
    assert letters[0].error.code == "model_unavailable"
    assert letters[0].attempts == harness.config.max_attempts
    assert letters[0].topic == "dead.work"
    assert harness.bus.stats().group("work", "pool").dead_lettered == 1
    harness.heal("a")
    run(harness.bus.replay(envelope.message_id))
    assert harness.seen("a")[-1] == "s1"
    assert run(harness.letters.list()) == []


def test_a_non_retryable_failure_is_dead_at_once(harness: Harness) -> None:
    harness.add("work", "pool", "a", "fatal")
    run(harness.bus.publish(_envelope("s1")))
    assert harness.seen("a") == ["s1"]
    (letter,) = run(harness.letters.list())
    assert letter.error.code == "bad_input" and letter.attempts == 1


def test_a_redelivered_message_is_handled_once_per_consumer(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    envelope = _envelope("s1")
    first = run(harness.bus.request(envelope))
    again = run(harness.bus.request(envelope.model_copy(update={"attempt": 2})))
    assert harness.seen("a") == ["s1"]
    assert again.message_id == first.message_id


def test_a_gone_member_is_skipped_for_the_next(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")
    harness.remove("a")
    replies = [run(harness.bus.request(_envelope(f"s{i}"))) for i in range(3)]
    assert [r.payload.output for r in replies] == ["b", "b", "b"]
    assert harness.bus.stats().group("work", "pool").members == 1
    harness.remove("b")
    with pytest.raises(DeliveryError, match="no live member") as info:
        run(harness.bus.request(_envelope("s9")))
    assert info.value.retryable


# -- ordering and batches ---------------------------------------------------------------------


def test_messages_of_one_task_are_handled_in_publish_order(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")

    async def interleaved() -> None:
        # Concurrent publishes of two tasks from one producer, started in order.
        await asyncio.gather(
            *(
                harness.bus.publish(_envelope(f"{task}-{i}", task_id=task))
                for i in range(10)
                for task in ("x", "y")
            )
        )

    run(interleaved())
    for task in ("x", "y"):
        order = [s for s in harness.seen("a") + harness.seen("b") if s.startswith(task)]
        assert order == [f"{task}-{i}" for i in range(10)]
        # one task's messages stay with one member
        assert any(all(s in harness.seen(m) for s in order) for m in ("a", "b"))


def test_publish_batch_delivers_everything_in_task_order(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.add("work", "pool", "b")
    envelopes = [_envelope(f"t{t}-{i}", task_id=f"t{t}") for i in range(20) for t in range(4)]
    run(harness.bus.publish_batch(envelopes))
    seen = harness.seen("a") + harness.seen("b")
    assert sorted(seen) == sorted(e.payload.step.id for e in envelopes)
    for t in range(4):
        mine = [s for s in harness.seen("a") if s.startswith(f"t{t}-")] or [
            s for s in harness.seen("b") if s.startswith(f"t{t}-")
        ]
        assert mine == [f"t{t}-{i}" for i in range(20)]
    assert harness.bus.stats().group("work", "pool").delivered == len(envelopes)


def test_a_failure_inside_a_batch_keeps_task_order(harness: Harness) -> None:
    harness.add("work", "pool", "a", "flaky")
    envelopes = [_envelope(f"s{i}") for i in range(4)]
    run(harness.bus.publish_batch(envelopes))
    # s0 failed once; s1..s3 were skipped then, and everything went again in order
    assert harness.seen("a") == ["s0", "s0", "s1", "s1", "s2", "s2", "s3", "s3"]
    assert run(harness.letters.list()) == []


# -- backpressure -----------------------------------------------------------------------------


def test_a_full_group_raises_when_configured_to(kind: str) -> None:
    harness = Harness(kind, BusConfig(max_in_flight=1, on_full="raise"))
    try:
        harness.add("work", "pool", "a", "slow", delay=0.5)

        async def two() -> list[Any]:
            return await asyncio.gather(
                harness.bus.publish(_envelope("s1", task_id="x")),
                harness.bus.publish(_envelope("s2", task_id="y")),
                return_exceptions=True,
            )

        outcomes = run(two())
        assert outcomes[0] is None
        assert isinstance(outcomes[1], BackPressureError)
        assert "max_in_flight=1" in outcomes[1].message
    finally:
        harness.cleanup()


def test_a_full_group_makes_publish_wait_then_give_up(kind: str) -> None:
    harness = Harness(kind, BusConfig(max_in_flight=1, on_full="wait", full_timeout_s=0.2))
    try:
        harness.add("work", "pool", "a", "slow", delay=0.6)

        async def scenario() -> tuple[Any, int]:
            first = asyncio.ensure_future(harness.bus.publish(_envelope("s1", task_id="x")))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(harness.bus.publish(_envelope("s2", task_id="y")))
            await asyncio.sleep(0.05)
            queued = harness.bus.stats().group("work", "pool").queued
            results = await asyncio.gather(first, second, return_exceptions=True)
            return results, queued

        (first, second), queued = run(scenario())
        assert queued == 1  # the waiting publish is visible as queue depth
        assert first is None
        assert isinstance(second, BackPressureError)
        assert harness.seen("a") == ["s1"]
    finally:
        harness.cleanup()


def test_a_full_consumer_refuses_and_the_bus_waits_for_room(kind: str) -> None:
    harness = Harness(kind)
    try:
        harness.add("work", "pool", "a", "slow", delay=0.2, capacity=1)

        async def two() -> None:
            await asyncio.gather(
                harness.bus.publish(_envelope("s1", task_id="x")),
                harness.bus.publish(_envelope("s2", task_id="y")),
            )

        run(two())
        assert sorted(harness.seen("a")) == ["s1", "s2"]
    finally:
        harness.cleanup()


# -- Ray only: processes die ------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.parametrize("ray_kind", RAY_KINDS)
def test_killing_a_consumer_mid_handler_redelivers_and_the_effect_happens_once(
    ray_session: None, ray_kind: str
) -> None:
    import ray

    from tests.protocols.bus_consumers import Ledger

    ledger = ray.remote(Ledger).options(num_cpus=0).remote()
    harness = Harness(ray_kind)
    try:
        envelope = _envelope("s1", task_id="t-kill")
        harness.add("work", "pool", "a", "effect", delay=30.0, ledger=ledger)
        harness.add("work", "pool", "b", "effect", delay=0.0, ledger=ledger)
        # The task's messages go to one member first; make sure that is the one we kill.
        first = harness.bus._topics["work"]["pool"].sticky("t-kill")[0]
        victim = next(n for n, h in harness.consumers.items() if h == first)

        async def publish_and_kill() -> None:
            job = asyncio.ensure_future(harness.bus.publish(envelope))
            while not ray.get(ledger.read.remote())[0]:
                await asyncio.sleep(0.05)  # the victim has done its effect and is sleeping
            ray.kill(harness.consumers[victim], no_restart=True)
            await job

        run(publish_and_kill())
        effects, writes = ray.get(ledger.read.remote())
        assert list(effects) == [envelope.message_id]  # exactly one effect
        assert writes == 2  # both members ran the handler; the key made the effect idempotent
        assert harness.bus.stats().group("work", "pool").redeliveries == 1
    finally:
        harness.cleanup()
        ray.kill(ledger, no_restart=True)


@pytest.mark.ray
def test_killing_the_dead_letter_actor_loses_no_acknowledged_letter(
    ray_session: None, tmp_path: Any
) -> None:
    import ray

    path = str(tmp_path / "dead.jsonl")
    harness = Harness("ray", letters_path=path)
    try:
        harness.add("work", "pool", "a", "fatal")
        envelopes = [_envelope(f"s{i}", task_id=f"t{i}") for i in range(3)]
        for envelope in envelopes:
            run(harness.bus.publish(envelope))
        actor = harness.letters_actor

        def pid() -> int | None:  # None while the actor is down
            try:
                return int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid())))
            except ray.exceptions.RayActorError:
                return None

        before = pid()
        ray.kill(actor, no_restart=False)  # Ray restarts it; it reloads
        deadline = time.monotonic() + 60
        while pid() in (before, None):  # the kill is asynchronous: wait for the new process
            assert time.monotonic() < deadline, "the dead-letter actor was not restarted"
            time.sleep(0.1)
        letters = run(harness.letters.list())
        assert [d.envelope.message_id for d in letters] == [e.message_id for e in envelopes]
        harness.heal("a")
        run(harness.bus.replay(envelopes[0].message_id))
        assert len(run(harness.letters.list())) == 2
    finally:
        harness.cleanup()


def test_a_batch_to_a_group_with_no_member_left_is_an_error(harness: Harness) -> None:
    harness.add("work", "pool", "a")
    harness.remove("a")
    with pytest.raises(DeliveryError, match="no live member"):
        run(harness.bus.publish(_envelope("s1")))
    with pytest.raises(DeliveryError, match="no live member"):
        run(harness.bus.publish_batch([_envelope("s2"), _envelope("s3")]))


def test_a_consumer_that_stays_full_makes_publish_give_up(kind: str) -> None:
    harness = Harness(kind, BusConfig(full_timeout_s=0.3, retry_backoff_s=0.01))
    try:
        harness.add("work", "pool", "a", "slow", delay=1.5, capacity=1)

        async def two() -> list[Any]:
            first = asyncio.ensure_future(harness.bus.publish(_envelope("s1", task_id="x")))
            while "s1" not in harness.seen("a"):  # s1 holds the consumer's only slot
                await asyncio.sleep(0.02)
            second = harness.bus.publish(_envelope("s2", task_id="y"))
            return await asyncio.gather(first, second, return_exceptions=True)

        first, second = run(two())
        assert first is None
        assert isinstance(second, BackPressureError)
        assert "is full" in second.message
    finally:
        harness.cleanup()
