"""The Ray bus: members are Ray actors that host a ``ConsumerHost`` (see ``ConsumerActor``).

The bus object is a small picklable routing table of actor handles plus this process's
counters, so it can be handed to any actor (the coordinator, a gateway) and used there; a
delivery is one call, a batch is one call for many messages: over the member's lane when it
runs on this node (``protocols._lane``, ``BusConfig.direct_lanes``), else one actor call.

A member may also be a ``ConsumerHost`` in the process that uses the bus (an agent colocated
with the coordinator): delivery to it is a function call with the same guarantees (dedupe,
bounded inbox, error reports) and no Ray round trip. Such members are subscribed after the
bus reached its process; they are not meant to be pickled.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from protocols import _lane
from protocols._bus import DeliveryCore, MemberGone
from protocols._bus_types import BusConfig, Consumer
from protocols._consumer import BatchResult, ConsumerClosedError, ConsumerHost, ConsumerStats
from protocols._deadletters import DeadLetter, DeadLetterSink, DeadLetterStore
from protocols.errors import DeliveryError, ErrorReport, TroupeError
from protocols.messages import Envelope
from protocols.tasks import TaskCompleted, TaskFailed, TaskSubmitted

_T = TypeVar("_T")

# A member that cannot be reached is skipped for the next one.
_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)

_dumps = functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)


def pickle_natively(*classes: type) -> None:
    """Has Ray serialize instances of ``classes`` with the standard pickler.

    Ray pickles call arguments and results with cloudpickle, whose per-object hook is a Python
    call for every model, datetime and enum inside a message. These classes are plain data,
    which the standard (C) pickler handles on its own at about half the cost (a
    ``TaskCompleted`` with its trace: 206 -> 107 us to pickle). Exact classes, not subclasses;
    per process, so each module that sends such objects registers them when it is imported.
    """
    for cls in classes:
        ray.util.register_serializer(cls, serializer=_dumps, deserializer=pickle.loads)


pickle_natively(Envelope, TaskSubmitted, TaskCompleted, TaskFailed)


class RayBus(DeliveryCore[Any]):
    """Delivers envelopes to Ray actors; same semantics as ``InProcessBus``.

    Args:
        dead_letters: Where given-up messages go: a ``RayDeadLetters`` over the shared actor.
        config: Attempts, in-flight bounds and batching.
    """

    def __init__(self, dead_letters: DeadLetterSink, config: BusConfig | None = None):
        super().__init__(config=config, dead_letters=dead_letters)

    async def _call(self, member: Any, envelope: Envelope, timeout: float) -> Envelope | None:
        if isinstance(member, ConsumerHost):
            return await _local(member.deliver(envelope), timeout)
        reply: Envelope | None = await self._remote(member, "deliver", envelope, timeout)
        return reply

    async def _call_batch(
        self, member: Any, envelopes: list[Envelope], timeout: float
    ) -> list[BatchResult]:
        if isinstance(member, ConsumerHost):
            return await _local(member.deliver_batch(envelopes), timeout)
        results: list[BatchResult] = await self._remote(member, "deliver_batch", envelopes, timeout)
        return results

    async def _remote(self, member: Any, method: str, argument: Any, timeout: float) -> Any:
        """Over the member's lane when it has one to this process (see ``protocols._lane``),
        else one Ray call; the same errors either way."""
        if self.config.direct_lanes:
            try:
                return await _lane.lane_call(member, method, argument, timeout=timeout)
            except _lane.LaneUnavailable:
                pass  # another node, or a message only Ray's serializer carries
            except _lane.LaneBroken:  # its process ended during the call, as a dead actor's
                raise MemberGone from None
            except _lane.LaneRemoteError as exc:
                raise _crashed(exc.cause) from None
        return await _remote(getattr(member, method).remote, argument, timeout)


async def _local(call: Awaitable[_T], timeout: float) -> _T:
    try:
        return await asyncio.wait_for(call, timeout)
    except ConsumerClosedError:
        raise MemberGone from None


async def _remote(method: Callable[[Any], Any], argument: Any, timeout: float) -> Any:
    ref = method(argument)
    try:
        return await asyncio.wait_for(_await(ref), timeout)
    except _GONE:
        raise MemberGone from None
    except TimeoutError:
        ray.cancel(ref)
        raise
    except RayTaskError as exc:  # the host itself broke (handler errors come back as reports)
        raise _crashed(exc.cause) from None


def _crashed(cause: BaseException) -> DeliveryError:
    return DeliveryError(
        f"consumer host crashed: {cause!r}", code="consumer_crashed", retryable=False
    )


async def _await(ref: Awaitable[Any]) -> Any:
    return await ref


def member_lane(member: object) -> _lane.LaneServer:
    """The lane a bus member's actor serves (see ``protocols._lane``): the bus's two calls,
    ``deliver`` and ``deliver_batch``."""
    return _lane.LaneServer(member, ("deliver", "deliver_batch"))


class ConsumerActor:
    """Ray actor body for any consumer: builds it from a factory and hosts it.

    Use ``ray.remote(ConsumerActor).remote(factory, name=...)``; agents have their own actor
    class with the same two methods.
    """

    def __init__(self, factory: Callable[[], Consumer], *, name: str, capacity: int = 1024):
        self._host = ConsumerHost(factory(), name=name, capacity=capacity)
        self._lane = member_lane(self)

    async def lane_address(self) -> _lane.LaneAddress | None:
        """Where this actor serves ``deliver`` and ``deliver_batch`` on its lane (started on
        the first ask); None where lanes are not supported."""
        return await self._lane.address()

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Bus entry point: one message."""
        return await self._host.deliver(envelope)

    async def deliver_batch(self, envelopes: list[Envelope]) -> list[BatchResult]:
        """Bus entry point: several messages, in order."""
        return await self._host.deliver_batch(envelopes)

    async def deliver_json(self, data: str | bytes) -> Envelope | ErrorReport | None:
        """Entry point for envelopes as JSON from outside; see ``ConsumerHost.deliver_json``."""
        return await self._host.deliver_json(data)

    def stats(self) -> ConsumerStats:
        """Consumer-side counters."""
        return self._host.stats()


class DeadLetterActor:
    """Ray actor body hosting the shared, persisted ``DeadLetterStore``."""

    def __init__(self, path: str | None):
        from pathlib import Path

        self._store = DeadLetterStore(Path(path) if path else None)

    def put(self, letter: DeadLetter) -> None:
        """See ``DeadLetterStore.put``."""
        self._store.put(letter)

    def list(self, topic: str | None = None) -> list[DeadLetter]:
        """See ``DeadLetterStore.list``."""
        return self._store.list(topic)

    def take(self, message_id: str) -> DeadLetter:
        """See ``DeadLetterStore.take``."""
        return self._store.take(message_id)


class RayDeadLetters:
    """A ``DeadLetterSink`` over the dead-letter actor; picklable, usable from any actor."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def put(self, letter: DeadLetter) -> None:
        """Keeps a dead letter in the shared store."""
        await _await(self.handle.put.remote(letter))

    async def list(self, topic: str | None = None) -> list[DeadLetter]:
        """Dead letters of one original topic, or all."""
        letters: list[DeadLetter] = await _await(self.handle.list.remote(topic))
        return letters

    async def take(self, message_id: str) -> DeadLetter:
        """Removes and returns one dead letter."""
        try:
            letter: DeadLetter = await _await(self.handle.take.remote(message_id))
        except RayTaskError as exc:
            if isinstance(exc.cause, TroupeError):
                raise exc.cause from None
            raise
        return letter


def dead_letter_actor(path: str | None, *, name: str = "troupe-dead-letters") -> Any:
    """Gets or creates the named dead-letter actor; restarted by Ray, reloaded from ``path``.

    Recovery path: the store appends every put and take to ``path`` (fsync'd) before it
    answers, so after the actor dies Ray restarts it and it reloads every letter it had
    acknowledged.
    """
    remote: Any = ray.remote(DeadLetterActor)
    here = ray.get_runtime_context().get_node_id()
    return remote.options(
        name=name,
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=3,
        # The file is on this node's disk: a restart elsewhere would come back empty.
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(path)
