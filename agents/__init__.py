"""The agent team: planner, executor, reviewer, the coordinator, tools, hosting on Ray, the CLI."""

from agents._build import ROLES, build_agent, high_impact_tools, model_client, tool_registry
from agents._builtin_tools import ToolsSettings, builtin_tools
from agents._cli import main, render_outcome, run_task
from agents._coordinator import Coordinator
from agents._executor import Executor
from agents._hosting import Agent, AgentActor, AgentConsumer, CoordinatorActor
from agents._mcp import McpServerSettings, McpSettings, McpTool, McpToolset, load_mcp_tools
from agents._model import (
    ChatMessage,
    FallbackModelClient,
    ModelClient,
    ModelReply,
    ModelRequest,
    ModelToolCall,
    OpenAIModelClient,
    UsageMeter,
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
from agents._toolkit import (
    ToolArgs,
    ToolContext,
    ToolPolicy,
    ToolRegistry,
    ToolResult,
    TypedTool,
)
from agents._tools import MODEL_TOOL, calculate, default_tools

__all__ = [
    "MODEL_TOOL",
    "ROLES",
    "Agent",
    "AgentActor",
    "AgentConsumer",
    "AgentSettings",
    "ChatMessage",
    "Coordinator",
    "CoordinatorActor",
    "Executor",
    "FallbackModelClient",
    "McpServerSettings",
    "McpSettings",
    "McpTool",
    "McpToolset",
    "MemorySettings",
    "ModelClient",
    "ModelEndpoint",
    "ModelReply",
    "ModelRequest",
    "ModelToolCall",
    "OpenAIModelClient",
    "Planner",
    "Prompt",
    "RaySettings",
    "Reviewer",
    "Team",
    "ToolArgs",
    "ToolContext",
    "ToolPolicy",
    "ToolRegistry",
    "ToolResult",
    "ToolsSettings",
    "TroupeSettings",
    "TypedTool",
    "UsageMeter",
    "build_agent",
    "builtin_tools",
    "calculate",
    "default_tools",
    "draft_to_plan",
    "goal_key",
    "high_impact_tools",
    "load_mcp_tools",
    "load_prompt",
    "main",
    "model_client",
    "plan_schema",
    "render_outcome",
    "rule_verdict",
    "run_task",
    "schema_token_bound",
    "start_team",
    "tool_registry",
]
