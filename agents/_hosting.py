"""Hosting: agents inside Ray actors, wired to the bus. The only place agents meet Ray.

Agent logic is plain async code (``handle(message) -> message``); ``AgentConsumer`` adapts it
to the bus (replies in envelopes, failures as ``ErrorReport`` messages, never tracebacks), and
the actor classes below run it in a Ray worker.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

import ray

from agents._build import build_agent, shared_memory
from agents._coordinator import Coordinator
from agents._settings import TroupeSettings
from protocols import (
    AnyMessage,
    ConsumerHost,
    ConsumerStats,
    Envelope,
    ErrorReport,
    RayBus,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    TroupeError,
)
from protocols._consumer import BatchResult

logger = logging.getLogger(__name__)


class Agent(Protocol):
    """What every agent is: a name, and one message in, one message out."""

    name: str

    async def handle(self, message: AnyMessage) -> AnyMessage | None:
        """Handles one message."""
        ...


class AgentConsumer:
    """Adapts an agent to the bus's ``Consumer`` interface."""

    def __init__(self, agent: Agent):
        self.agent = agent

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Hands the payload to the agent; its failure comes back as an ``ErrorReport``."""
        try:
            reply = await self.agent.handle(envelope.payload)
        except Exception as exc:
            if not isinstance(exc, TroupeError):
                # Not an expected failure: a bug. Keep the traceback in this worker's log.
                logger.exception("%s crashed on %s", self.agent.name, envelope.payload.type)
            report = ErrorReport.from_exception(
                exc, sender=self.agent.name, task_id=envelope.task_id
            )
            return envelope.reply(report, sender=self.agent.name)
        return None if reply is None else envelope.reply(reply, sender=self.agent.name)


class AgentActor:
    """A Ray actor hosting one agent built inside the worker (its model client is local).

    The agent sits behind a ``ConsumerHost``: redeliveries of a message it already handled get
    the same reply without running it again, and its inbox is bounded.
    """

    def __init__(self, role: str, name: str, settings: TroupeSettings):
        memory = shared_memory(settings)
        self._name = name
        self._host = ConsumerHost(
            AgentConsumer(build_agent(role, settings, memory, name=name)), name=name
        )

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Bus entry point: one message."""
        return await self._host.deliver(envelope)

    async def deliver_batch(self, envelopes: list[Envelope]) -> list[BatchResult]:
        """Bus entry point: several messages, in order."""
        return await self._host.deliver_batch(envelopes)

    def stats(self) -> ConsumerStats:
        """Consumer-side counters (in flight, handled, duplicates...)."""
        return self._host.stats()

    def ping(self) -> str:
        """Answers once the agent is built: used to wait for the team to be up."""
        return self._name


class CoordinatorActor:
    """A Ray actor hosting the coordinator; it reaches agents through the ``RayBus``."""

    def __init__(self, bus: RayBus, settings: TroupeSettings):
        self._coordinator = Coordinator(
            bus,
            shared_memory(settings),
            namespace=settings.memory.namespace,
            request_timeout_s=settings.agents.request_timeout_s,
        )

    async def run(self, task: TaskSubmitted) -> TaskCompleted | TaskFailed:
        """Runs one task to its end."""
        return await self._coordinator.run(task)

    def ping(self) -> str:
        """Answers once constructed."""
        return self._coordinator.name


# Ray's stubs type a remote class as the class itself; the handles are used untyped.
REMOTE_AGENT: Final[Any] = ray.remote(AgentActor)
REMOTE_COORDINATOR: Final[Any] = ray.remote(CoordinatorActor)
