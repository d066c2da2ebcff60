"""The delivery rules both buses share; only how a member is called differs.

Semantics (one test suite runs them against the in-process bus and the Ray bus):

* Consumers subscribe to a topic in a named group. ``publish`` gives the envelope to every
  group; within a group exactly one member gets it. ``publish`` returns once every group's
  member has handled it: the handler's return is the acknowledgement.
* At-least-once: a member that is gone gets skipped for the next member; a published message
  whose handler fails in a retryable way is redelivered (another member first) up to
  ``max_attempts`` times, then becomes a dead letter with its ``ErrorReport`` and can be
  replayed. Members deduplicate by message id (``ConsumerHost``), so a redelivery to the same
  member does not repeat the effect; effects that must happen once across members take the
  message id as their idempotency key.
* Per-task order: a producer's published messages of one task go to one member of a group
  (chosen by task id) one after the other, so they are handled in publish order.
* Backpressure: at most ``max_in_flight`` unacknowledged messages per topic and group; past
  that, ``publish`` waits (up to ``full_timeout_s``) or raises ``BackPressureError``. Members
  refuse deliveries past their own capacity the same way.
* ``request`` needs exactly one group on the topic; one member (round robin) handles it and its
  reply comes back; an ``ErrorReport`` reply is raised as ``RemoteAgentError``. Requests are not
  retried on handler errors (the caller decides, with ``retryable`` on the error); they are
  redelivered only when the member is gone.

Retries owned here: transport (member gone) for both, handler failures for publish only.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from protocols._bus_types import DEFAULT_TIMEOUT_S, BusConfig, BusStats, GroupStats
from protocols._consumer import SKIPPED, BatchResult
from protocols._deadletters import DeadLetter, DeadLetterSink
from protocols.errors import BackPressureError, DeliveryError, ErrorReport, RemoteAgentError
from protocols.messages import Envelope

M = TypeVar("M")


class MemberGone(Exception):
    """Raised by a transport when the member it called no longer exists."""


@dataclass
class _Group(Generic[M]):
    """One consumer group of one topic: its members and this process's counters."""

    topic: str
    name: str
    members: list[M] = field(default_factory=list)
    cursor: int = 0
    queued: int = 0
    in_flight: int = 0
    delivered: int = 0
    redeliveries: int = 0
    dead_lettered: int = 0
    room: asyncio.Condition | None = None
    task_locks: dict[str | None, asyncio.Lock] = field(default_factory=dict)

    def round_robin(self) -> list[M]:
        """Members starting at the cursor; advances it."""
        if not self.members:
            return []
        start = self.cursor % len(self.members)
        self.cursor = start + 1
        return self.members[start:] + self.members[:start]

    def sticky(self, task_id: str | None) -> list[M]:
        """Members starting at the one this task's messages go to."""
        if not self.members:
            return []
        start = zlib.crc32((task_id or "").encode()) % len(self.members)
        return self.members[start:] + self.members[:start]

    def stats(self) -> GroupStats:
        return GroupStats(
            topic=self.topic,
            group=self.name,
            members=len(self.members),
            queued=self.queued,
            in_flight=self.in_flight,
            delivered=self.delivered,
            redeliveries=self.redeliveries,
            dead_lettered=self.dead_lettered,
        )


class DeliveryCore(ABC, Generic[M]):
    """The bus algorithm over an abstract transport (``_call`` and ``_call_batch``)."""

    def __init__(self, *, config: BusConfig | None, dead_letters: DeadLetterSink):
        self.config = config or BusConfig()
        self.dead_letters = dead_letters
        self._topics: dict[str, dict[str, _Group[M]]] = {}

    # -- transport, per implementation ------------------------------------------------------

    @abstractmethod
    async def _call(self, member: M, envelope: Envelope, timeout: float) -> Envelope | None:
        """Delivers one envelope; raises ``MemberGone`` or ``TimeoutError``."""

    @abstractmethod
    async def _call_batch(
        self, member: M, envelopes: list[Envelope], timeout: float
    ) -> list[BatchResult]:
        """Delivers envelopes in order; raises ``MemberGone`` or ``TimeoutError``."""

    # -- wiring and observation --------------------------------------------------------------

    def subscribe(self, topic: str, member: M, *, group: str) -> None:
        """Adds ``member`` to ``group`` on ``topic``."""
        groups = self._topics.setdefault(topic, {})
        groups.setdefault(group, _Group(topic=topic, name=group)).members.append(member)

    def stats(self) -> BusStats:
        """Queue depth, in-flight and redelivery counts of every group, in this process."""
        return BusStats(
            groups=tuple(g.stats() for groups in self._topics.values() for g in groups.values())
        )

    # -- publish -----------------------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        """See ``Bus.publish``."""
        groups = list(self._topics.get(envelope.topic, {}).values())
        await asyncio.gather(*(self._publish_to(g, envelope) for g in groups))

    async def publish_batch(self, envelopes: list[Envelope]) -> None:
        """See ``Bus.publish_batch``: one call per member and chunk, order kept per task."""
        by_topic: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_topic.setdefault(envelope.topic, []).append(envelope)
        jobs = [
            self._publish_batch_to(group, batch)
            for topic, batch in by_topic.items()
            for group in self._topics.get(topic, {}).values()
        ]
        await asyncio.gather(*jobs)

    async def replay(self, message_id: str) -> None:
        """Takes a dead letter and publishes it again as a first attempt."""
        letter = await self.dead_letters.take(message_id)
        await self.publish(letter.envelope.model_copy(update={"attempt": 1}))

    async def _publish_to(self, group: _Group[M], envelope: Envelope) -> None:
        async with self._task_order(group, envelope.task_id), self._room(group, 1):
            await self._deliver_until_done(group, envelope)

    async def _publish_batch_to(self, group: _Group[M], envelopes: list[Envelope]) -> None:
        if not group.members:  # all members died: say so, as a single publish would
            raise DeliveryError(
                f"no live member in group {group.name!r} of topic {group.topic!r}",
                code="no_consumer",
            )
        # Each task's messages go, in order, to the member its task id picks.
        by_member: dict[int, list[Envelope]] = {}
        for envelope in envelopes:
            by_member.setdefault(id(group.sticky(envelope.task_id)[0]), []).append(envelope)
        await asyncio.gather(*(self._send_chunks(group, chunk) for chunk in by_member.values()))

    async def _send_chunks(self, group: _Group[M], envelopes: list[Envelope]) -> None:
        size = min(self.config.max_batch, self.config.max_in_flight)
        for start in range(0, len(envelopes), size):
            chunk = envelopes[start : start + size]
            async with self._room(group, len(chunk)):
                results = await self._try_batch(group, chunk)
            # Failed and skipped messages go again, one by one, in their original order.
            for envelope, result in zip(chunk, results, strict=True):
                await self._settle(group, envelope, result)

    async def _settle(self, group: _Group[M], envelope: Envelope, result: BatchResult) -> None:
        """What to do with one message of a batch after the batch call."""
        if result == SKIPPED:
            await self._publish_to(group, envelope)
            return
        report = _error_of(result)
        if report is None:
            return
        if report.code != "back_pressure" and (
            not report.retryable or envelope.attempt >= self.config.max_attempts
        ):
            await self._dead_letter(group, envelope, report)
            return
        group.redeliveries += 1
        await self._publish_to(group, envelope.model_copy(update={"attempt": envelope.attempt + 1}))

    async def _try_batch(self, group: _Group[M], chunk: list[Envelope]) -> list[BatchResult]:
        member = group.sticky(chunk[0].task_id)[0]
        try:
            results = await self._call_batch(member, chunk, DEFAULT_TIMEOUT_S)
        except MemberGone:
            self._drop(group, member)
            return [SKIPPED] * len(chunk)
        except TimeoutError:  # slow, not gone: each message goes again on its own
            return [SKIPPED] * len(chunk)
        group.delivered += sum(1 for r in results if _acknowledged(r))
        return results

    async def _deliver_until_done(self, group: _Group[M], envelope: Envelope) -> None:
        """Redelivers until acknowledged, dead-lettered, or no member is left."""
        attempt = envelope.attempt
        backoff = self.config.retry_backoff_s
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.full_timeout_s
        while True:
            current = envelope.model_copy(update={"attempt": attempt})
            reply = await self._deliver_once(group, current, sticky=True)
            report = _error_of(reply)
            if report is None:
                return
            if report.code == "back_pressure":  # the member is full: not a failed attempt
                if loop.time() > give_up_at:
                    raise BackPressureError(
                        f"{group.topic}/{group.name}: {report.message} for longer than "
                        f"{self.config.full_timeout_s:g}s"
                    )
                await asyncio.sleep(self.config.retry_backoff_s)
                continue
            if not report.retryable or attempt >= self.config.max_attempts:
                await self._dead_letter(group, current, report)
                return
            attempt += 1
            group.redeliveries += 1
            await asyncio.sleep(backoff)
            backoff *= 2

    async def _dead_letter(self, group: _Group[M], envelope: Envelope, report: ErrorReport) -> None:
        group.dead_lettered += 1
        letter = DeadLetter(
            envelope=envelope, group=group.name, error=report, attempts=envelope.attempt
        )
        await self.dead_letters.put(letter)

    # -- request -----------------------------------------------------------------------------

    async def request(self, envelope: Envelope, *, timeout: float = DEFAULT_TIMEOUT_S) -> Envelope:
        """See ``Bus.request``."""
        group = self._only_group(envelope.topic)
        async with self._room(group, 1):
            reply = await self._deliver_once(group, envelope, sticky=False, timeout=timeout)
        if reply is None:
            raise DeliveryError(
                f"the consumer of {envelope.topic!r} returned no reply to "
                f"{envelope.payload.type!r}; requests need one",
                code="no_reply",
                retryable=False,
            )
        report = _error_of(reply)
        if report is not None:
            raise RemoteAgentError(report)
        return reply

    def _only_group(self, topic: str) -> _Group[M]:
        groups = list(self._topics.get(topic, {}).values())
        if len(groups) != 1:
            found = ", ".join(g.name for g in groups) or "none"
            raise DeliveryError(
                f"a request on topic {topic!r} needs exactly one consumer group; found {found}",
                code="no_consumer" if not groups else "ambiguous_consumer",
                retryable=not groups,
            )
        return groups[0]

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver_once(
        self,
        group: _Group[M],
        envelope: Envelope,
        *,
        sticky: bool,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Envelope | None:
        """One delivery to one live member; a gone member is dropped and the next one tried."""
        candidates = group.sticky(envelope.task_id) if sticky else group.round_robin()
        for member in candidates:
            try:
                reply = await self._call(member, envelope, timeout)
            except MemberGone:
                self._drop(group, member)
                group.redeliveries += 1
                continue
            except TimeoutError:
                raise DeliveryError(
                    f"no reply on {envelope.topic!r} within {timeout:g}s", code="timeout"
                ) from None
            if _error_of(reply) is None:
                group.delivered += 1
            return reply
        if self.config.members_restart:
            raise DeliveryError(
                f"no member of group {group.name!r} of topic {envelope.topic!r} answered (they "
                "restart after a crash; try again)",
                code="consumer_unavailable",
                retryable=True,
            )
        raise DeliveryError(
            f"no live member in group {group.name!r} of topic {envelope.topic!r}",
            code="no_consumer",
        )

    def _drop(self, group: _Group[M], member: M) -> None:
        if self.config.members_restart:
            return  # it is restarting; the next delivery tries it again
        with contextlib.suppress(ValueError):
            group.members.remove(member)

    # -- ordering and room -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _task_order(self, group: _Group[M], task_id: str | None) -> AsyncIterator[None]:
        """One message of a task at a time per group, in the order publishes arrived."""
        lock = group.task_locks.setdefault(task_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and group.task_locks.get(task_id) is lock:
                del group.task_locks[task_id]  # no one else waits: keep the map small

    @contextlib.asynccontextmanager
    async def _room(self, group: _Group[M], count: int) -> AsyncIterator[None]:
        """Holds ``count`` in-flight slots of the group for the duration."""
        if group.room is None:
            group.room = asyncio.Condition()
        limit = self.config.max_in_flight
        async with group.room:
            if group.in_flight + count > limit:
                if self.config.on_full == "raise":
                    raise BackPressureError(
                        f"{group.topic}/{group.name} has {group.in_flight} messages in flight "
                        f"(max_in_flight={limit})"
                    )
                group.queued += 1
                try:
                    await asyncio.wait_for(
                        group.room.wait_for(lambda: group.in_flight + count <= limit),
                        self.config.full_timeout_s,
                    )
                except TimeoutError:
                    raise BackPressureError(
                        f"{group.topic}/{group.name} stayed full for "
                        f"{self.config.full_timeout_s:g}s (max_in_flight={limit})"
                    ) from None
                finally:
                    group.queued -= 1
            group.in_flight += count
        try:
            yield
        finally:
            async with group.room:
                group.in_flight -= count
                group.room.notify_all()

    # -- pickling (the Ray bus travels to other actors) --------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_topics"] = {
            topic: {
                name: _Group(topic=topic, name=name, members=list(g.members))
                for name, g in gs.items()
            }
            for topic, gs in self._topics.items()
        }
        return state


def _error_of(reply: BatchResult) -> ErrorReport | None:
    if isinstance(reply, Envelope) and isinstance(reply.payload, ErrorReport):
        return reply.payload
    return None


def _acknowledged(result: BatchResult) -> bool:
    return result != SKIPPED and _error_of(result) is None
