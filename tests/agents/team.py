"""An in-process team for agent tests: real agents and coordinator, scripted models."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents import AgentConsumer, Coordinator, Executor, Planner, Reviewer, default_tools
from memory import EmbeddedStore, LocalMemory
from protocols import InProcessBus, Topics
from tests.fakes import ScriptedModelClient


@dataclass
class InProcessTeam:
    coordinator: Coordinator
    memory: LocalMemory
    planner_model: ScriptedModelClient
    executor_model: ScriptedModelClient
    reviewer_model: ScriptedModelClient
    planner: Planner
    reviewer: Reviewer

    def assert_complete(self) -> None:
        self.planner_model.assert_complete()
        self.executor_model.assert_complete()
        self.reviewer_model.assert_complete()


def build_team(
    planner: ScriptedModelClient,
    executor: ScriptedModelClient,
    reviewer: ScriptedModelClient,
    *,
    data_dir: Path | None = None,
    executors: int = 1,
) -> InProcessTeam:
    memory = LocalMemory(EmbeddedStore(data_dir / "memory.jsonl" if data_dir else None))
    bus = InProcessBus()
    tools = default_tools(memory=memory)
    workspaces = (data_dir or Path(tempfile.gettempdir())) / "workspaces"
    planning = Planner(planner, memory, tools)
    reviewing = Reviewer(reviewer)
    bus.subscribe(Topics.PLANNER, AgentConsumer(planning), group="p")
    for i in range(executors):
        agent = Executor(executor, memory, tools, name=f"executor-{i}", workspace_root=workspaces)
        bus.subscribe(Topics.EXECUTOR, AgentConsumer(agent), group="e")
    bus.subscribe(Topics.REVIEWER, AgentConsumer(reviewing), group="r")
    return InProcessTeam(
        Coordinator(bus, memory), memory, planner, executor, reviewer, planning, reviewing
    )
