"""The Ray bus: consumers are Ray actors with an async ``deliver`` method.

The bus object itself is a small picklable routing table of actor handles, so it can be handed
to any actor (the coordinator, a gateway) and used there; a hop is one actor call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from protocols._bus import DEFAULT_TIMEOUT_S, Routes, unwrap_reply
from protocols.errors import DeliveryError
from protocols.messages import Envelope

# A member that cannot be reached is skipped for the next one; anything else is the handler's.
_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class RayBus:
    """Delivers envelopes to Ray actors; same semantics as ``InProcessBus``."""

    def __init__(self) -> None:
        self._routes: Routes[Any] = Routes()

    def subscribe(self, topic: str, actor: Any, *, group: str) -> None:
        """Adds an actor (with an async ``deliver(envelope)`` method) to ``group`` on ``topic``."""
        self._routes.add(topic, group, actor)

    async def publish(self, envelope: Envelope) -> None:
        """Delivers to one member of every group, concurrently; returns when all have acked."""
        groups = self._routes.groups(envelope.topic)
        await asyncio.gather(
            *(self._deliver(envelope, g, timeout=DEFAULT_TIMEOUT_S) for g in groups)
        )

    async def request(self, envelope: Envelope, *, timeout: float = DEFAULT_TIMEOUT_S) -> Envelope:
        """Delivers to one member of the topic's only group and returns the checked reply."""
        group = self._routes.only_group(envelope.topic)
        return unwrap_reply(envelope, await self._deliver(envelope, group, timeout=timeout))

    async def _deliver(self, envelope: Envelope, group: str, *, timeout: float) -> Envelope | None:
        members = self._routes.rotation(envelope.topic, group)
        for actor in members:
            ref = actor.deliver.remote(envelope)
            try:
                reply: Envelope | None = await asyncio.wait_for(_await(ref), timeout)
                return reply
            except _GONE:
                continue  # that member is gone: the next one gets the envelope
            except TimeoutError:
                ray.cancel(ref)
                raise DeliveryError(
                    f"no reply on {envelope.topic!r} within {timeout:g}s", code="timeout"
                ) from None
            except RayTaskError as exc:
                raise DeliveryError(
                    f"consumer of {envelope.topic!r} crashed: {exc.cause!r}",
                    code="consumer_crashed",
                    retryable=False,
                ) from None
        raise DeliveryError(
            f"no live member in group {group!r} of topic {envelope.topic!r}", code="no_consumer"
        )


async def _await(ref: Any) -> Any:
    return await ref
