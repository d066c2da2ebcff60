"""The agent team: planner, executor, reviewer, the coordinator, tools, hosting on Ray, the CLI."""

from agents._build import ROLES, build_agent, model_client
from agents._cli import main, render_outcome, run_task
from agents._coordinator import Coordinator
from agents._executor import Executor
from agents._hosting import Agent, AgentActor, AgentConsumer, CoordinatorActor
from agents._model import (
    ModelClient,
    ModelReply,
    ModelRequest,
    OpenAIModelClient,
    schema_token_bound,
)
from agents._planner import Planner, draft_to_plan, goal_key, plan_schema
from agents._prompts import Prompt, load_prompt
from agents._reviewer import Reviewer, rule_verdict
from agents._settings import (
    AgentSettings,
    MemorySettings,
    ModelEndpoint,
    RaySettings,
    TroupeSettings,
)
from agents._team import Team, start_team
from agents._tools import MODEL_TOOL, Calculator, Tool, ToolRegistry, calculate, default_tools

__all__ = [
    "MODEL_TOOL",
    "ROLES",
    "Agent",
    "AgentActor",
    "AgentConsumer",
    "AgentSettings",
    "Calculator",
    "Coordinator",
    "CoordinatorActor",
    "Executor",
    "MemorySettings",
    "ModelClient",
    "ModelEndpoint",
    "ModelReply",
    "ModelRequest",
    "OpenAIModelClient",
    "Planner",
    "Prompt",
    "RaySettings",
    "Reviewer",
    "Team",
    "Tool",
    "ToolRegistry",
    "TroupeSettings",
    "build_agent",
    "calculate",
    "default_tools",
    "draft_to_plan",
    "goal_key",
    "load_prompt",
    "main",
    "model_client",
    "plan_schema",
    "render_outcome",
    "rule_verdict",
    "run_task",
    "schema_token_bound",
    "start_team",
]
