"""MCP servers' tools in the team: from ``agents.tools.mcp`` to the registry, the planner's
choices, the coordinator's approval gate and an executor step, in process and on real Ray.

The server is the real stdio server of ``tests/agents/mcp_server.py``; the models are the
scripted one of ``crash_support`` and, for the planner, ``planning_client`` below.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents import (
    AgentConsumer,
    ModelEndpoint,
    ModelRequest,
    ToolRegistry,
    TroupeSettings,
    build_agent,
    high_impact_tools,
    start_team,
    tool_registry,
)
from agents._builtin_tools import CalculatorTool
from agents._hosting import McpAgent
from memory import EmbeddedStore, LocalMemory
from protocols import (
    ConfigurationError,
    Envelope,
    ErrorReport,
    Plan,
    PlanProposed,
    PlanRequested,
    Step,
    StepAssigned,
    StepResult,
    TaskCompleted,
    TaskSubmitted,
)
from tests.fakes import FunctionModelClient

REPO = Path(__file__).resolve().parents[2]
SCRIPTED = {"client": "tests.agents.crash_support:scripted_client", "model": "crash"}


def calc_server(**overrides: Any) -> dict[str, Any]:
    """The test server over stdio, as ``agents.tools.mcp.servers`` lists it."""
    return {
        "name": "calc",
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.agents.mcp_server"],
        "cwd": str(REPO),
        "tools": ["add", "shout", "explode"],
        "high_impact": ["explode"],
        "timeout_s": 20,
    } | overrides


def team_settings(
    root: Path, *servers: dict[str, Any], name: str = "mcp", planner: dict[str, str] = SCRIPTED
) -> TroupeSettings:
    """A team on the scripted model with the given MCP servers, everything under ``root``."""
    return TroupeSettings.model_validate(
        {
            "agents": {
                "planner": planner,
                "executor": SCRIPTED,
                "reviewer": SCRIPTED,
                "executors": 1,
                "tools": {"mcp": {"servers": list(servers)}},
                "workspace_dir": str(root / "workspaces"),
                "request_timeout_s": 60,
            },
            "memory": {
                "embedding_model": None,
                "actor_name": f"{name}-memory",
                "data_dir": str(root / "memory"),
            },
            "bus": {"actor_name": f"{name}-letters", "dead_letters_path": str(root / "dl.jsonl")},
            "journal": {"data_dir": str(root / "journal"), "synchronous": "NORMAL"},
            "budget": {"max_steps": 4},
        }
    )


def mcp_agent(role: str, settings: TroupeSettings, *, name: str = "executor-0") -> McpAgent:
    memory = LocalMemory(EmbeddedStore(None))
    return McpAgent(
        lambda tools: build_agent(role, settings, memory, name=name, mcp_tools=tools),
        settings.agents.tools.mcp.servers,
    )


def add_step(tool: str = "calc_add") -> Step:
    return Step(id="s1", description="add two numbers", tool=tool, input='{"a": 2, "b": 3}')


class _Other(CalculatorTool):
    name = "other"


# --- registry wiring (no server) ---------------------------------------------------------------


def test_registry_extend_adds_tools_all_or_none() -> None:
    registry = ToolRegistry([CalculatorTool()])
    with pytest.raises(ConfigurationError, match="two tools are named 'calculator'"):
        registry.extend([_Other(), CalculatorTool()])
    assert registry.names() == ["calculator"]
    registry.extend([_Other()])
    assert registry.names() == ["calculator", "other"]


def test_mcp_settings_default_to_no_servers_and_an_mcp_tool_cannot_shadow_another(
    tmp_path: Path,
) -> None:
    assert TroupeSettings().agents.tools.mcp.servers == ()
    settings = team_settings(tmp_path)
    assert tool_registry(settings, mcp_tools=[_Other()]).names() == ["calculator", "other"]
    with pytest.raises(ConfigurationError, match="two tools are named 'calculator'"):
        tool_registry(settings, mcp_tools=[CalculatorTool()])


def test_high_impact_mcp_tools_are_gated_by_name_without_connecting(tmp_path: Path) -> None:
    # The command does not exist: the names come from the settings alone.
    ghost = calc_server(name="ops", command="/nonexistent/mcp-server")
    assert high_impact_tools(team_settings(tmp_path, ghost)) == frozenset({"ops_explode"})
    assert high_impact_tools(team_settings(tmp_path)) == frozenset()


def test_without_servers_the_agent_is_built_once_and_start_does_nothing(tmp_path: Path) -> None:
    builds: list[int] = []
    settings = team_settings(tmp_path)
    memory = LocalMemory(EmbeddedStore(None))

    def build(tools: Any) -> Any:
        builds.append(len(tools))
        return build_agent("executor", settings, memory, name="executor-0", mcp_tools=tools)

    agent = McpAgent(build)
    asyncio.run(agent.start())
    assert builds == [0] and agent.name == "executor-0"


# --- agents with the real stdio server ---------------------------------------------------------


def test_an_executor_loads_its_mcp_tools_on_its_loop_and_runs_a_step_with_one(
    tmp_path: Path,
) -> None:
    settings = team_settings(tmp_path, calc_server())

    async def scenario() -> StepResult:
        agent = mcp_agent("executor", settings)
        try:
            reply = await agent.handle(StepAssigned(task_id="t1", goal="2 + 3", step=add_step()))
            assert isinstance(reply, StepResult)
            return reply
        finally:
            await agent.close()

    result = asyncio.run(scenario())
    assert (result.ok, result.output) == (True, "5")
    assert [(c.tool, c.ok) for c in result.tool_calls] == [("calc_add", True)]


def planning_client(endpoint: ModelEndpoint) -> FunctionModelClient:
    """``ModelEndpoint.client`` of a planner that plans with ``calc_add`` only if offered."""

    def plan(request: ModelRequest) -> dict[str, Any]:
        assert request.schema_name == "plan", request.schema_name
        system = str(request.messages[0].get("content", ""))
        offered = json.dumps(request.schema)
        if "calc_add: Add two integers." not in system or '"calc_add"' not in offered:
            return {
                "steps": [{"description": "x", "tool": "answer", "input": "", "depends_on": []}]
            }
        step = {"description": "add", "tool": "calc_add", "input": "2 3", "depends_on": []}
        return {"steps": [step]}

    return FunctionModelClient(plan)


def test_the_planner_is_offered_mcp_tools_and_plans_with_them(tmp_path: Path) -> None:
    planner = {"client": "tests.agents.test_agents_mcp_team:planning_client", "model": "p"}
    settings = team_settings(tmp_path, calc_server(), planner=planner)

    async def scenario() -> Any:
        agent = mcp_agent("planner", settings, name="planner")
        try:
            return await agent.handle(PlanRequested(task_id="t1", goal="add 2 and 3"))
        finally:
            await agent.close()

    proposed = asyncio.run(scenario())
    assert isinstance(proposed, PlanProposed)
    assert (proposed.source, [s.tool for s in proposed.plan.steps]) == ("model", ["calc_add"])


def test_an_unreachable_server_is_the_agents_configuration_error_on_every_message(
    tmp_path: Path,
) -> None:
    settings = team_settings(tmp_path, calc_server(name="ghost", command="/nonexistent/mcp"))
    consumer = AgentConsumer(mcp_agent("executor", settings))
    assigned = StepAssigned(task_id="t1", goal="2 + 3", step=add_step("ghost_add"))

    async def deliver_twice() -> list[Envelope | None]:
        return [
            await consumer.deliver(Envelope.wrap(assigned, sender="coordinator", topic="executor"))
            for _ in range(2)
        ]

    for reply in asyncio.run(deliver_twice()):
        assert reply is not None and isinstance(reply.payload, ErrorReport)
        report = reply.payload
        assert (report.code, report.sender, report.retryable) == (
            "configuration_error",
            "executor-0",
            False,
        )
        assert "executor-0 could not load its MCP tools" in report.message
        assert "MCP server 'ghost'" in report.message and "/nonexistent/mcp" in report.message


# --- on real Ray ---------------------------------------------------------------------------------


@pytest.mark.ray
def test_a_team_on_ray_runs_a_declared_mcp_step_and_gates_high_impact_mcp_tools(
    ray_session: None, tmp_path: Path
) -> None:
    name = f"mcp-{uuid.uuid4().hex[:8]}"
    team = start_team(team_settings(tmp_path, calc_server(), name=name))
    try:
        # by default the planner and reviewer run inside the coordinator's actor
        assert team.agents == team.executors and len(team.executors) == 1
        plan = Plan(steps=(add_step(),))
        outcome = team.run(
            TaskSubmitted(task_id="t-add", goal="add 2 and 3", plan=plan), timeout_s=120
        )
        assert isinstance(outcome, TaskCompleted), outcome
        outputs = {record.step.id: record.output for record in outcome.steps}
        assert outputs["s1"] == "5"

        explode = Step(id="s1", description="explode", tool="calc_explode", input="boom")
        gated = TaskSubmitted(task_id="t-gated", goal="explode", plan=Plan(steps=(explode,)))
        team.submit(gated)
        waiting: list[Any] = []
        for _ in range(300):
            waiting = team.pending_approvals("t-gated")
            if waiting:
                break
            time.sleep(0.1)
        assert [w.step.tool for w in waiting] == ["calc_explode"]
        assert team.cancel("t-gated", reason="test over")
    finally:
        team.stop()
