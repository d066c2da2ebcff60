"""Hosting: agents inside Ray actors, wired to the bus. The only place agents meet Ray.

Agent logic is plain async code (``handle(message) -> message``); ``AgentConsumer`` adapts it
to the bus (replies in envelopes, failures as ``ErrorReport`` messages, never tracebacks), and
the actor classes below run it in a Ray worker.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import IO, Any, Final, Protocol

import ray

from agents._build import build_agent, high_impact_tools, shared_memory
from agents._coordinator import Coordinator
from agents._executor import Executor
from agents._journal import JournalConfig, SqliteJournal
from agents._journal_models import RetentionPolicy
from agents._mcp import McpServerSettings, McpToolset, load_mcp_tools
from agents._settings import TroupeSettings
from agents._toolkit import TypedTool
from memory import EpisodicMemory
from protocols import (
    AnyMessage,
    ApprovalDecided,
    ApprovalRequested,
    ConfigurationError,
    ConsumerHost,
    ConsumerStats,
    Envelope,
    ErrorReport,
    LaneAddress,
    RayBus,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    Topics,
    TroupeError,
    member_lane,
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


class McpAgent:
    """An agent that gets its MCP servers' tools before it handles its first message.

    MCP connections belong to the event loop that opens them, and an actor's constructor runs
    outside its loop. So the agent is built at once without MCP tools (a setup error shows when
    the team starts), then built again with them by ``start`` (on the first message), on the
    loop that runs every message. A server that cannot be reached fails the message with a
    ``ConfigurationError``, which the bus reports as this agent's error; the next message
    tries again.

    Args:
        build: Builds the agent with the given MCP tools (none at first).
        servers: The MCP servers; with none, the agent is used as first built.
    """

    def __init__(
        self,
        build: Callable[[Sequence[TypedTool[Any]]], Agent],
        servers: Sequence[McpServerSettings] = (),
    ):
        self._build = build
        self._agent = build(())
        self.name = self._agent.name
        self._servers = tuple(servers)
        self._toolset: McpToolset | None = None
        self._lock = asyncio.Lock()  # binds to the loop of its first use

    @property
    def agent(self) -> Agent:
        """The agent as built so far (with its MCP tools once started)."""
        return self._agent

    async def start(self) -> None:
        """Loads the MCP tools and rebuilds the agent with them; once (a no-op without servers).

        Raises:
            ConfigurationError: A server cannot be reached, its tools do not match the settings,
                or a tool's name is taken by another tool.
        """
        if self._toolset is not None or not self._servers:
            return
        async with self._lock:
            if self._toolset is not None:
                return
            try:
                toolset = await load_mcp_tools(self._servers)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{self.name} could not load its MCP tools: {exc.message}"
                ) from None
            try:
                agent = self._build(toolset.tools)
            except BaseException:
                await toolset.close()
                raise
            self._agent, self._toolset = agent, toolset

    async def handle(self, message: AnyMessage) -> AnyMessage | None:
        """Starts (first time) and hands the message to the agent."""
        await self.start()
        return await self._agent.handle(message)

    async def close(self) -> None:
        """Lets the agent's memory writes land, then closes the MCP connections (stops stdio
        servers); later MCP calls fail cleanly."""
        if isinstance(self._agent, Executor):
            await self._agent.flush()
        if self._toolset is not None:
            await self._toolset.close()


class AgentActor:
    """A Ray actor hosting one agent built inside the worker (its model client is local).

    The agent sits behind a ``ConsumerHost``: redeliveries of a message it already handled get
    the same reply without running it again, and its inbox is bounded. The tools of the MCP
    servers in ``agents.tools.mcp`` are loaded on the actor's event loop before the first
    message (``McpAgent``).
    """

    def __init__(self, role: str, name: str, settings: TroupeSettings):
        self._name = name
        self._agent = hosted_agent(role, name, settings, shared_memory(settings))
        self._host = ConsumerHost(AgentConsumer(self._agent), name=name)
        self._lane = member_lane(self)

    async def lane_address(self) -> LaneAddress | None:
        """Where the bus may reach ``deliver`` / ``deliver_batch`` without a Ray call (see
        ``protocols._lane``); started on the first ask."""
        return await self._lane.address()

    async def start(self) -> None:
        """Loads the MCP tools now instead of on the first message.

        Raises:
            ConfigurationError: A configured MCP server cannot be reached or does not fit.
        """
        await self._agent.start()

    async def close(self) -> None:
        """Waits for the agent's memory writes, then closes its MCP connections (stops the stdio
        servers it started)."""
        self._lane.close()
        await self._agent.close()

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

    def pid(self) -> int:
        """The worker's process id (for operators, and crash tests that SIGKILL it)."""
        return os.getpid()


def hosted_agent(
    role: str, name: str, settings: TroupeSettings, memory: EpisodicMemory
) -> McpAgent:
    """One agent of ``role`` as configured, with the MCP tools it will load on first use."""

    def build(mcp_tools: Sequence[TypedTool[Any]]) -> Agent:
        return build_agent(role, settings, memory, name=name, mcp_tools=mcp_tools)

    return McpAgent(build, settings.agents.tools.mcp.servers)


COLOCATED_TOPICS: Final[dict[str, tuple[str, str]]] = {
    "planner": (Topics.PLANNER, "planners"),
    "reviewer": (Topics.REVIEWER, "reviewers"),
}
"""Where the roles that can run inside the coordinator's actor subscribe, there or in actors of
their own: (topic, group)."""


class CoordinatorActor:
    """A Ray actor hosting the coordinator; it reaches agents through the ``RayBus``.

    It runs on the head node (where the journal's SQLite file lives), holds the journal's
    lock (one coordinator per journal), and is restartable: after a crash, the first call to
    the new instance resumes every unfinished task from the journal. Ray retries calls that
    were in progress (``max_task_retries``), so a waiting caller just gets its outcome later.

    The roles in ``agents.colocated`` (planner, reviewer) run here too, as in-process members
    of the bus: the coordinator reaches them without a Ray round trip, and they restart with
    it.
    """

    def __init__(self, bus: RayBus, settings: TroupeSettings):
        journal = open_journal(settings) if settings.journal.enabled else None
        config = settings.journal
        memory = shared_memory(settings)
        self._colocated: list[McpAgent] = []
        for role in settings.agents.colocated:
            agent = hosted_agent(role, role, settings, memory)
            topic, group = COLOCATED_TOPICS[role]
            bus.subscribe(topic, ConsumerHost(AgentConsumer(agent), name=role), group=group)
            self._colocated.append(agent)
        self._coordinator = Coordinator(
            bus,
            memory,
            journal=journal,
            namespace=settings.memory.namespace,
            request_timeout_s=settings.agents.request_timeout_s,
            high_impact_tools=high_impact_tools(settings),
            approvals=settings.approvals,
            retention=RetentionPolicy(
                max_age_days=config.retention_max_age_days, keep_last=config.retention_keep_last
            ),
            compact_every=config.compact_every,
            recall_episodes=settings.agents.recall_episodes,
        )
        self._recovered: list[str] | None = None

    async def start(self) -> None:
        """Loads the colocated agents' MCP tools now instead of on their first message.

        Raises:
            ConfigurationError: A configured MCP server cannot be reached or does not fit.
        """
        for agent in self._colocated:
            await agent.start()

    async def close(self) -> None:
        """Stops the coordinator (``Coordinator.close``: pending journal and memory writes
        land, unfinished tasks stay resumable), then closes the colocated agents."""
        await self._coordinator.close()
        for agent in self._colocated:
            await agent.close()

    async def _ready(self) -> Coordinator:
        if self._recovered is None:
            self._recovered = []
            self._recovered = await self._coordinator.recover()
        return self._coordinator

    async def recover(self) -> list[str]:
        """Resumes unfinished tasks (once per process); returns the ids resumed."""
        await self._ready()
        assert self._recovered is not None
        return self._recovered

    async def run(self, task: TaskSubmitted) -> TaskCompleted | TaskFailed:
        """Runs one task to its end (joins it when it is already known)."""
        return await (await self._ready()).run(task)

    async def submit(self, task: TaskSubmitted) -> str:
        """Journals the task and starts it; returns its id."""
        return await (await self._ready()).submit(task)

    async def wait(
        self, task_id: str, timeout_s: float | None = None
    ) -> TaskCompleted | TaskFailed:
        """The task's outcome once it has one."""
        return await (await self._ready()).wait(task_id, timeout_s)

    async def decide(self, decision: ApprovalDecided) -> None:
        """A human's decision on a waiting step."""
        await (await self._ready()).decide(decision)

    async def cancel(self, task_id: str, reason: str = "", requested_by: str = "user") -> bool:
        """Stops a task; False when it had already finished."""
        return await (await self._ready()).cancel(task_id, reason=reason, requested_by=requested_by)

    async def pending_approvals(self, task_id: str | None = None) -> list[ApprovalRequested]:
        """Steps waiting for a decision."""
        return (await self._ready()).pending_approvals(task_id)

    async def fork(self, task_id: str, from_step: str, goal: str | None = None) -> str:
        """A new task from step ``from_step`` of a finished one."""
        return await (await self._ready()).fork(task_id, from_step, goal=goal)

    async def stats(self) -> dict[str, int]:
        """Tasks running here, and how many have caught up with their journal."""
        return (await self._ready()).stats()

    def ping(self) -> str:
        """Answers once constructed."""
        return self._coordinator.name

    def pid(self) -> int:
        """The worker's process id (for operators, and crash tests that SIGKILL it)."""
        return os.getpid()


def open_journal(settings: TroupeSettings) -> SqliteJournal:
    """The journal of these settings, locked for this process (one coordinator per journal).

    Raises:
        ConfigurationError: another live process holds the journal.
    """
    config = settings.journal
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "coordinator.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigurationError(
            f"the journal in {data_dir} is in use by {holder}: one coordinator owns a journal; "
            "stop the other team or set journal.data_dir to another directory"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    _LOCKS.append(lock)  # held until this process exits
    return SqliteJournal(JournalConfig(data_dir=data_dir, synchronous=config.synchronous))


_LOCKS: list[IO[str]] = []


# Ray's stubs type a remote class as the class itself; the handles are used untyped.
REMOTE_AGENT: Final[Any] = ray.remote(AgentActor)
REMOTE_COORDINATOR: Final[Any] = ray.remote(CoordinatorActor)
