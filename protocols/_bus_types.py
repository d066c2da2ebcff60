"""The bus interface, its configuration and its observable state."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from protocols.messages import Envelope

DEFAULT_TIMEOUT_S = 300.0


class Consumer(Protocol):
    """Something that handles envelopes: returns a reply, or None when there is nothing to say."""

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Handles one envelope."""
        ...


class BusConfig(BaseModel):
    """How hard the bus tries, and how much it holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Deliveries of a published message before it is dead."
    )
    max_in_flight: int = Field(
        default=1024, ge=1, description="Messages per topic and group awaiting their ack."
    )
    on_full: Literal["wait", "raise"] = Field(
        default="wait", description="When max_in_flight is reached: wait for room, or raise."
    )
    full_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for room before BackPressureError."
    )
    retry_backoff_s: float = Field(
        default=0.02, ge=0, description="Pause before a redelivery (doubles per attempt)."
    )
    max_batch: int = Field(default=256, ge=1, description="Envelopes in one delivery call.")
    members_restart: bool = Field(
        default=False,
        description="Members come back after a crash (Ray actors with max_restarts): one that "
        "does not answer is skipped for this delivery but kept, and a request that found no "
        "member answering fails as retryable.",
    )
    direct_lanes: bool = Field(
        default=True,
        description="Deliver to a Ray actor on the same node over a direct lane (a Unix socket "
        "between the two processes, ~0.1 ms a call instead of ~1 ms for a Ray call; Linux), "
        "through Ray otherwise. Off: every delivery is a Ray call, listed as a task in the Ray "
        "dashboard.",
    )


class GroupStats(BaseModel):
    """One consumer group of one topic, as this process sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    group: str
    members: int = Field(description="Live members.")
    queued: int = Field(description="Publishes waiting for room (queue depth).")
    in_flight: int = Field(description="Delivered, not yet acknowledged.")
    delivered: int = Field(description="Acknowledged deliveries.")
    redeliveries: int = Field(description="Deliveries repeated after a failure or a lost member.")
    dead_lettered: int = Field(description="Messages given up on.")


class BusStats(BaseModel):
    """Every group this bus delivers to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: tuple[GroupStats, ...]

    def group(self, topic: str, group: str) -> GroupStats:
        """The stats of one group; ``KeyError`` when there is none."""
        for stats in self.groups:
            if (stats.topic, stats.group) == (topic, group):
                return stats
        raise KeyError((topic, group))


class Bus(Protocol):
    """Moves envelopes between agents. Agent code only ever sees this interface."""

    async def publish(self, envelope: Envelope) -> None:
        """Delivers to one member of every group on the topic; returns once all acknowledged."""
        ...

    async def publish_batch(self, envelopes: list[Envelope]) -> None:
        """``publish`` for many envelopes, in fewer calls; per-task order is kept."""
        ...

    async def request(self, envelope: Envelope, *, timeout: float = DEFAULT_TIMEOUT_S) -> Envelope:
        """Delivers to one member of the topic's only group and returns its reply."""
        ...
