"""The in-process bus: same semantics as the Ray bus, for tests and single-process use."""

from __future__ import annotations

import asyncio

from protocols._bus import DEFAULT_TIMEOUT_S, Consumer, Routes, unwrap_reply
from protocols.errors import DeliveryError, TroupeError
from protocols.messages import Envelope


class InProcessBus:
    """Delivers envelopes to consumers in this process, awaiting each handler."""

    def __init__(self) -> None:
        self._routes: Routes[Consumer] = Routes()

    def subscribe(self, topic: str, consumer: Consumer, *, group: str) -> None:
        """Adds ``consumer`` to ``group`` on ``topic``."""
        self._routes.add(topic, group, consumer)

    async def publish(self, envelope: Envelope) -> None:
        """Delivers to one member of every group; returns when all have handled it."""
        for group in self._routes.groups(envelope.topic):
            await self._deliver(envelope, group, timeout=DEFAULT_TIMEOUT_S)

    async def request(self, envelope: Envelope, *, timeout: float = DEFAULT_TIMEOUT_S) -> Envelope:
        """Delivers to one member of the topic's only group and returns the checked reply."""
        group = self._routes.only_group(envelope.topic)
        return unwrap_reply(envelope, await self._deliver(envelope, group, timeout=timeout))

    async def _deliver(self, envelope: Envelope, group: str, *, timeout: float) -> Envelope | None:
        members = self._routes.rotation(envelope.topic, group)
        if not members:
            raise DeliveryError(f"no member left in group {group!r} of {envelope.topic!r}")
        try:
            return await asyncio.wait_for(members[0].deliver(envelope), timeout)
        except TimeoutError:
            raise DeliveryError(
                f"no reply on {envelope.topic!r} within {timeout:g}s", code="timeout"
            ) from None
        except TroupeError:
            raise
        except Exception as exc:
            raise DeliveryError(
                f"consumer of {envelope.topic!r} crashed: {type(exc).__name__}: {exc}",
                code="consumer_crashed",
                retryable=False,
            ) from exc
