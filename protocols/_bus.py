"""The bus interface and the routing rules both implementations share.

Semantics (identical for the in-process and the Ray bus, and tested against both):

* Consumers subscribe to a topic in a named group. ``publish`` gives the envelope to every group;
  within a group exactly one member gets it (round robin). ``publish`` returns once every group's
  member has handled it (the handler's return is the acknowledgement), so one producer's messages
  reach a consumer in publish order.
* ``request`` needs exactly one group on the topic; one member handles the envelope and its reply
  comes back. A reply carrying an ``ErrorReport`` is raised as ``RemoteAgentError``.
* A member that is gone (its process died) is skipped and the envelope goes to the next member
  of the group; when none is left the caller gets a retryable ``DeliveryError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from protocols.errors import DeliveryError, ErrorReport, RemoteAgentError
from protocols.messages import Envelope

DEFAULT_TIMEOUT_S = 300.0


class Consumer(Protocol):
    """Something that handles envelopes: returns a reply, or None when there is nothing to say."""

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Handles one envelope."""
        ...


class Bus(Protocol):
    """Moves envelopes between agents. Agent code only ever sees this interface."""

    async def publish(self, envelope: Envelope) -> None:
        """Delivers the envelope to one member of every group subscribed to its topic."""
        ...

    async def request(self, envelope: Envelope, *, timeout: float = DEFAULT_TIMEOUT_S) -> Envelope:
        """Delivers the envelope to one member of the topic's only group and returns its reply."""
        ...


M = TypeVar("M")


@dataclass
class Routes(Generic[M]):
    """topic -> group -> members, with a round-robin cursor per group."""

    table: dict[str, dict[str, list[M]]] = field(default_factory=dict)
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, topic: str, group: str, member: M) -> None:
        """Adds a member to a group of a topic."""
        self.table.setdefault(topic, {}).setdefault(group, []).append(member)

    def groups(self, topic: str) -> list[str]:
        """Group names subscribed to the topic, in subscription order."""
        return list(self.table.get(topic, {}))

    def only_group(self, topic: str) -> str:
        """The single group a request on this topic goes to."""
        groups = self.groups(topic)
        if len(groups) != 1:
            found = ", ".join(groups) or "none"
            raise DeliveryError(
                f"a request on topic {topic!r} needs exactly one consumer group; found {found}",
                code="no_consumer" if not groups else "ambiguous_consumer",
                retryable=not groups,
            )
        return groups[0]

    def rotation(self, topic: str, group: str) -> list[M]:
        """Members of the group starting at the round-robin cursor; advances the cursor."""
        members = self.table.get(topic, {}).get(group, [])
        if not members:
            return []
        start = self.cursors.get((topic, group), 0) % len(members)
        self.cursors[(topic, group)] = start + 1
        return members[start:] + members[:start]


def unwrap_reply(envelope: Envelope, reply: Envelope | None) -> Envelope:
    """Checks a request's reply: raises on a missing reply or an ``ErrorReport``."""
    if reply is None:
        raise DeliveryError(
            f"the consumer of {envelope.topic!r} returned no reply to "
            f"{envelope.payload.type!r}; requests need one",
            code="no_reply",
            retryable=False,
        )
    if isinstance(reply.payload, ErrorReport):
        raise RemoteAgentError(reply.payload)
    return reply
