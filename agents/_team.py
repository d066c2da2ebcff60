"""Starting and stopping a team on Ray: memory, planner, executor pool, reviewer, coordinator."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agents._hosting import COLOCATED_TOPICS, REMOTE_AGENT, REMOTE_COORDINATOR
from agents._settings import TroupeSettings
from memory import WeaviateMemory, memory_actor
from protocols import (
    ApprovalDecided,
    ApprovalRequested,
    ConfigurationError,
    RayBus,
    RayDeadLetters,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    Topics,
    dead_letter_actor,
)


@dataclass
class Team:
    """Handles to a running team. ``stop`` ends only the actors this team started.

    ``agents`` are the agents' own actors (planner, executors, reviewer, less the roles
    colocated in the coordinator's actor); ``executors`` the executor pool among them.
    """

    bus: RayBus
    coordinator: ActorHandle[Any]
    agents: list[ActorHandle[Any]]
    executors: list[ActorHandle[Any]] = field(default_factory=list)
    owned_memory: ActorHandle[Any] | None = None
    owned_dead_letters: ActorHandle[Any] | None = None
    _stopped: bool = field(default=False, repr=False)

    def run(
        self, task: TaskSubmitted, *, timeout_s: float | None = None
    ) -> TaskCompleted | TaskFailed:
        """Runs one task on the coordinator and waits for its outcome."""
        outcome: Any = ray.get(self.coordinator.run.remote(task), timeout=timeout_s)
        return cast(TaskCompleted | TaskFailed, outcome)

    def submit(self, task: TaskSubmitted) -> str:
        """Hands a task to the coordinator; it is journaled when this returns."""
        return cast(str, self._call("submit", task))

    def wait(self, task_id: str, timeout_s: float | None = None) -> TaskCompleted | TaskFailed:
        """Waits for a task's outcome (``GetTimeoutError`` after ``timeout_s``); a coordinator
        that crashes meanwhile is restarted by Ray, resumes the task, and is asked again."""
        outcome: Any = self._call("wait", task_id, timeout_s=timeout_s)
        return cast(TaskCompleted | TaskFailed, outcome)

    def pending_approvals(self, task_id: str | None = None) -> list[ApprovalRequested]:
        """Steps waiting for a human's decision."""
        return cast(list[ApprovalRequested], self._call("pending_approvals", task_id))

    def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Calls the coordinator, asking again while Ray restarts it (these calls are
        idempotent: a known task id joins the task)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return ray.get(getattr(self.coordinator, method).remote(*args), timeout=left)
            except RayActorError:
                if self._stopped or (deadline is not None and time.monotonic() >= deadline):
                    raise
                time.sleep(0.5)  # restarting: the new instance resumes from the journal

    def decide(self, decision: ApprovalDecided) -> None:
        """Approves, rejects or edits a waiting step."""
        ray.get(self.coordinator.decide.remote(decision))

    def cancel(self, task_id: str, *, reason: str = "", requested_by: str = "user") -> bool:
        """Stops a task; False when it had already finished."""
        return cast(bool, ray.get(self.coordinator.cancel.remote(task_id, reason, requested_by)))

    def fork(self, task_id: str, from_step: str, *, goal: str | None = None) -> str:
        """Starts a new task from a step of a finished one; returns the new id."""
        return cast(str, ray.get(self.coordinator.fork.remote(task_id, from_step, goal)))

    def recover(self) -> list[str]:
        """Resumes unfinished tasks from the journal; returns their ids."""
        return cast(list[str], ray.get(self.coordinator.recover.remote()))

    def stop(self, *, grace_s: float = 10.0) -> None:
        """Closes the agents (their memory writes land, MCP servers stop) for up to
        ``grace_s``, then kills the team's actors (and the memory actor when this team created
        it)."""
        if self._stopped:
            return
        self._stopped = True
        closing = [actor.close.remote() for actor in [self.coordinator, *self.agents]]
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get(closing, timeout=grace_s)
        for actor in [self.coordinator, *self.agents]:
            ray.kill(actor, no_restart=True)
        for owned in (self.owned_memory, self.owned_dead_letters):
            if owned is not None:
                ray.kill(owned, no_restart=True)


def start_team(settings: TroupeSettings) -> Team:
    """Starts every actor of a team and waits until all answer.

    The memory actor is shared by name: an existing one is joined, not replaced.
    """
    memory_handle = _start_memory(settings)
    # Agents come back after a crash; the coordinator re-sends the step (same idempotency key).
    options = {"num_cpus": settings.agents.num_cpus, "max_restarts": -1}
    # Planner and reviewer get actors unless they run inside the coordinator's (colocated).
    singles = {
        role: REMOTE_AGENT.options(**options).remote(role, role, settings)
        for role in COLOCATED_TOPICS
        if role not in settings.agents.colocated
    }
    executors = [
        REMOTE_AGENT.options(**options).remote("executor", f"executor-{i}", settings)
        for i in range(settings.agents.executors)
    ]
    letters_existed = _named_actor_exists(settings.bus.actor_name)
    letters = dead_letter_actor(
        str(settings.bus.dead_letters_path.resolve()), name=settings.bus.actor_name
    )
    bus = RayBus(
        RayDeadLetters(letters), settings.bus.config.model_copy(update={"members_restart": True})
    )
    for role, actor in singles.items():
        topic, group = COLOCATED_TOPICS[role]
        bus.subscribe(topic, actor, group=group)
    for executor in executors:
        bus.subscribe(Topics.EXECUTOR, executor, group="executors")
    # On this (the head) node, next to the journal file; restarted after a crash, and the
    # calls in progress then (a caller's wait) are retried on the new instance.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    coordinator = REMOTE_COORDINATOR.options(
        num_cpus=settings.agents.num_cpus,
        max_restarts=-1,
        max_task_retries=-1,
        scheduling_strategy=here,
    ).remote(bus, settings)
    planner, reviewer = singles.get("planner"), singles.get("reviewer")
    agents = [a for a in (planner, *executors, reviewer) if a is not None]
    team = Team(
        bus=bus,
        coordinator=coordinator,
        agents=agents,
        executors=executors,
        owned_memory=memory_handle,
        owned_dead_letters=None if letters_existed else letters,
    )
    try:
        ray.get([actor.ping.remote() for actor in [*agents, coordinator]], timeout=120)
        # MCP tools load now, so a server that is down stops the team here, not at the first task.
        try:
            ray.get([actor.start.remote() for actor in [*agents, coordinator]], timeout=120)
        except RayTaskError as exc:
            cause = exc.cause
            raise cause if isinstance(cause, ConfigurationError) else exc from None
        ray.get(coordinator.recover.remote(), timeout=120)
    except Exception:
        team.stop()
        raise
    return team


def _start_memory(settings: TroupeSettings) -> ActorHandle[Any] | None:
    """Starts the embedded store's actor (returned when this call created it), or checks that
    Weaviate answers; agents connect to either themselves (``shared_memory``)."""
    config = settings.memory
    if config.backend == "weaviate":
        assert config.weaviate is not None
        WeaviateMemory(config.weaviate).close()  # unreachable: ConfigurationError, now
        return None
    existed = _named_actor_exists(config.actor_name)
    handle = memory_actor(config.data_dir, name=config.actor_name)
    return None if existed else handle


def _named_actor_exists(name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True
