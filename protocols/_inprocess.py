"""The in-process bus: the shared delivery rules, calling ``ConsumerHost``s in this process."""

from __future__ import annotations

import asyncio

from protocols._bus import DeliveryCore, MemberGone
from protocols._bus_types import BusConfig, Consumer
from protocols._consumer import BatchResult, ConsumerClosedError, ConsumerHost
from protocols._deadletters import DeadLetterSink, InMemoryDeadLetters
from protocols.messages import Envelope


class InProcessBus(DeliveryCore[ConsumerHost]):
    """A bus for tests and single-process use; same semantics as ``RayBus``.

    Args:
        config: Attempts, in-flight bounds and batching.
        dead_letters: Where given-up messages go (in memory by default).
    """

    def __init__(
        self, config: BusConfig | None = None, *, dead_letters: DeadLetterSink | None = None
    ):
        super().__init__(config=config, dead_letters=dead_letters or InMemoryDeadLetters())

    def subscribe(self, topic: str, member: Consumer | ConsumerHost, *, group: str) -> None:
        """Adds a consumer (wrapped in a ``ConsumerHost`` unless it is one) to a group."""
        if not isinstance(member, ConsumerHost):
            name = f"{group}-{sum(len(g.members) for g in self._topics.get(topic, {}).values())}"
            member = ConsumerHost(member, name=name)
        super().subscribe(topic, member, group=group)

    async def _call(
        self, member: ConsumerHost, envelope: Envelope, timeout: float
    ) -> Envelope | None:
        try:
            return await asyncio.wait_for(member.deliver(envelope), timeout)
        except ConsumerClosedError:
            raise MemberGone from None

    async def _call_batch(
        self, member: ConsumerHost, envelopes: list[Envelope], timeout: float
    ) -> list[BatchResult]:
        try:
            return await asyncio.wait_for(member.deliver_batch(envelopes), timeout)
        except ConsumerClosedError:
            raise MemberGone from None
