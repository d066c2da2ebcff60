"""The public API of protocols and agents is pinned: a change here is a deliberate decision."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "protocols": [
        "AgentError", "AgentName", "AnyMessage", "ApprovalDecided", "ApprovalRequested",
        "BackPressureError", "Budget", "Bus", "BusConfig", "BusStats", "CancelTask", "CheckKind",
        "ConfigurationError", "Consumer", "ConsumerActor", "ConsumerClosedError", "ConsumerHost",
        "ConsumerStats", "DEFAULT_TIMEOUT_S", "DeadLetter", "DeadLetterActor", "DeadLetterSink",
        "DeadLetterStore", "Decision", "DeliveryCore", "DeliveryError", "Envelope", "ErrorReport",
        "GroupStats", "Heartbeat", "InMemoryDeadLetters", "InProcessBus", "LaneAddress",
        "LaneBroken", "LaneRemoteError", "LaneServer", "LaneUnavailable", "MAX_PLAN_STEPS",
        "MESSAGE_ADAPTER", "Message", "MessageValidationError", "Plan", "PlanProposed",
        "PlanRequested", "Provenance", "RayBus", "RayDeadLetters", "Recollection",
        "RemoteAgentError",
        "ReviewRequested", "ReviewVerdict", "SCHEMA_VERSION", "Step", "StepAssigned", "StepCheck",
        "StepId", "StepRecord", "StepResult", "TaskCompleted", "TaskError", "TaskFailed", "TaskId",
        "TaskSubmitted", "ToolCall", "Topics", "TraceEvent", "TroupeError", "Usage",
        "dead_letter_actor", "describe_validation_error", "lane_call", "member_lane",
        "message_schemas", "parse_message",
        "pickle_natively", "schema_breaks",
    ],
    "agents": [
        "Agent", "AgentActor", "AgentConsumer", "AgentSettings", "ChatMessage", "Coordinator",
        "CoordinatorActor", "Executor", "FallbackModelClient", "MODEL_TOOL", "McpServerSettings",
        "McpSettings", "McpTool", "McpToolset", "MemorySettings", "ModelClient", "ModelEndpoint",
        "ModelReply", "ModelRequest", "ModelToolCall", "OpenAIModelClient", "Planner", "Prompt",
        "ROLES", "RaySettings", "Reviewer", "Team", "ToolArgs", "ToolContext", "ToolPolicy",
        "ToolRegistry", "ToolResult", "ToolsSettings", "TroupeSettings", "TypedTool",
        "UsageMeter", "build_agent", "builtin_tools", "calculate", "default_tools",
        "draft_to_plan", "goal_key", "high_impact_tools", "load_mcp_tools", "load_prompt", "main",
        "model_client", "plan_schema", "render_outcome", "rule_verdict", "run_task",
        "schema_token_bound", "start_team", "tool_registry",
    ],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_all_is_pinned_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPECTED[package])
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"


def test_protocols_imports_nothing_of_ours() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "protocols"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                assert top not in {"agents", "memory", "serve"}, f"{path.name} imports {top}"
