"""Typed tools: schemas, argument validation, allow-lists, timeouts, episodes, the calculator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from agents._builtin_tools import BUILTIN_NAMES, CalculatorTool, ToolsSettings, builtin_tools
from agents._toolkit import (
    ToolArgs,
    ToolContext,
    ToolPolicy,
    ToolRegistry,
    ToolResult,
    TypedTool,
    task_workspace,
    tool_episode,
    workspace_path,
)
from agents._tools import calculate
from memory import EmbeddedStore, Episode, LocalMemory
from protocols import AgentError, ConfigurationError


class EchoArgs(ToolArgs):
    text: str = Field(min_length=1, max_length=20, description="What to echo.")
    times: int = Field(default=1, ge=1, le=3, description="How often.")


class EchoTool(TypedTool[EchoArgs]):
    name = "echo"
    description = "Echo the text."
    args_model = EchoArgs

    async def run(self, args: EchoArgs, ctx: ToolContext) -> ToolResult:
        return self.result(" ".join([args.text] * args.times) + f" @{ctx.idempotency_key}")


class SleepArgs(ToolArgs):
    seconds: float = Field(ge=0, le=10)


class SleepTool(TypedTool[SleepArgs]):
    name = "sleep"
    description = "Sleep."
    args_model = SleepArgs
    timeout_s = 0.2

    async def run(self, args: SleepArgs, ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(args.seconds)
        return self.result("slept")


class BrokenTool(TypedTool[ToolArgs]):
    name = "broken"
    description = "Always raises."
    args_model = ToolArgs

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolResult:
        raise KeyError("internal detail")


REGISTRY = ToolRegistry([EchoTool(), SleepTool(), BrokenTool(), CalculatorTool()])
EVERYTHING = ToolPolicy(REGISTRY.names())


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(task_id="t1", step_id="s2", attempt=3, workspace=tmp_path)


def _call(
    name: str, arguments: Any, ctx: ToolContext, policy: ToolPolicy = EVERYTHING
) -> ToolResult:
    return asyncio.run(REGISTRY.call(name, arguments, ctx, policy=policy))


def test_function_specs_are_openai_tools_from_the_argument_models() -> None:
    specs = REGISTRY.function_specs(["echo", "calculator", "not-registered"])
    assert [s["function"]["name"] for s in specs] == ["calculator", "echo"]
    echo = specs[1]
    assert echo["type"] == "function"
    assert echo["function"]["description"] == "Echo the text."
    params = echo["function"]["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["text"]
    assert params["additionalProperties"] is False
    assert params["properties"]["text"]["maxLength"] == 20
    assert params["properties"]["times"] == {
        "default": 1,
        "description": "How often.",
        "maximum": 3,
        "minimum": 1,
        "title": "Times",
        "type": "integer",
    }
    json.dumps(specs)  # what goes to the openai client must be plain JSON
    assert len(REGISTRY.function_specs(None)) == 4
    assert REGISTRY.function_specs(ToolPolicy({"sleep"}))[0]["function"]["name"] == "sleep"


def test_builtin_specs_cover_every_builtin(tmp_path: Path) -> None:
    memory = LocalMemory(EmbeddedStore(None))
    every = ToolsSettings(builtin=BUILTIN_NAMES)
    registry = ToolRegistry(builtin_tools(every, memory=memory))
    names = [s["function"]["name"] for s in registry.function_specs()]
    # http_get is off by default; only the calculator is on unless more are named
    assert [t.name for t in builtin_tools()] == ["calculator"]
    assert [t.name for t in builtin_tools(every)] == [
        n for n in BUILTIN_NAMES if n != "memory_search"
    ]
    assert names == [
        "calculator",
        "list_files",
        "memory_search",
        "python",
        "read_file",
        "write_file",
    ]
    assert all(t.impact in {"low", "high"} for t in builtin_tools())


def test_json_text_arguments_are_validated_and_run(ctx: ToolContext) -> None:
    result = _call("echo", '{"text": "hi", "times": 2}', ctx)
    assert result == result.model_copy(update={"duration_s": result.duration_s})
    assert result.ok and result.output == "hi hi @t1:s2:3" and result.code == "ok"


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        ('{"text": "hi", "times": 9}', ["times: Input should be less than or equal to 3"]),
        ('{"times": 1}', ["text: Field required"]),
        ('{"text": "hi", "loud": true}', ["loud: Extra inputs are not permitted"]),
        ('{"text": "hi",', ["not valid JSON", "send an object"]),
        ("[1, 2]", ["must be a JSON object, got list"]),
        ({"text": 5}, ["text: Input should be a valid string"]),
    ],
)
def test_bad_arguments_say_what_to_fix(
    ctx: ToolContext, arguments: Any, fragments: list[str]
) -> None:
    result = _call("echo", arguments, ctx)
    assert not result.ok and result.code == "bad_arguments"
    assert result.error is not None
    for fragment in fragments:
        assert fragment in result.error
    assert "Traceback" not in result.error and "https://" not in result.error


def test_allow_list_refuses_whatever_the_model_asks_and_counts_it(ctx: ToolContext) -> None:
    policy = ToolPolicy({"calculator"})
    refused = _call("echo", {"text": "hi"}, ctx, policy)
    assert not refused.ok and refused.code == "not_allowed"
    assert refused.error == "tool 'echo' is not allowed for this agent; allowed tools: calculator"
    # a tool that does not exist is refused by the list before anything else
    assert _call("rm_rf", {}, ctx, policy).code == "not_allowed"
    assert [(r.tool, r.task_id, r.step_id) for r in policy.refusals] == [
        ("echo", "t1", "s2"),
        ("rm_rf", "t1", "s2"),
    ]
    assert _call("calculator", {"expression": "6*7"}, ctx, policy).output == "42"
    assert len(policy.refusals) == 2


def test_unknown_tool_timeout_and_crash_become_results(ctx: ToolContext) -> None:
    policy = ToolPolicy({"ghost", "sleep", "broken"})
    unknown = _call("ghost", {}, ctx, policy)
    assert unknown.code == "unknown_tool" and "known tools: broken, calculator" in str(
        unknown.error
    )
    slow = _call("sleep", {"seconds": 5}, ctx, policy)
    assert slow.code == "timeout" and slow.error == "no result within 0.2 s"
    assert slow.duration_s < 2
    crashed = _call("broken", "", ctx, policy)
    assert crashed.code == "failed" and crashed.error == "KeyError: 'internal detail'"


def test_registry_refuses_duplicate_and_bad_names() -> None:
    with pytest.raises(ConfigurationError, match="two tools are named 'echo'"):
        ToolRegistry([EchoTool(), EchoTool()])
    bad = EchoTool()
    bad.name = "has space"
    with pytest.raises(ConfigurationError, match="must match"):
        ToolRegistry([bad])


def test_results_become_untrusted_tool_episodes_and_tool_calls(ctx: ToolContext) -> None:
    ok = _call("calculator", '{"expression": "2+3"}', ctx)
    failed = _call("calculator", '{"expression": "2/0"}', ctx)
    first = tool_episode(ok, ctx, arguments='{"expression": "2+3"}')
    second = tool_episode(failed, ctx, arguments='{"expression": "2/0"}', call_index=1)
    assert isinstance(first, Episode)
    assert (first.kind, first.provenance, first.trusted) == ("tool_result", "tool", False)
    assert (first.task_id, first.step_id, first.content) == ("t1", "s2", "5")
    assert first.metadata["idempotency_key"] == "t1:s2:3"
    assert second.content == "error (bad_arguments): division by zero"
    assert "failed" in second.tags and first.id != second.id
    # the same call recorded again (a redelivery) lands on the same episode
    assert tool_episode(ok, ctx, arguments="x").id == first.id
    call = failed.as_tool_call('{"expression": "2/0"}')
    assert (call.tool, call.ok, call.output) == ("calculator", False, second.content)


def test_task_workspace_is_one_directory_per_task(tmp_path: Path) -> None:
    path = task_workspace(tmp_path, "task-1")
    assert path.is_dir() and path.parent == tmp_path.resolve()
    for bad in ("..", "../x", "a/b", "", "/etc"):
        with pytest.raises(ConfigurationError):
            task_workspace(tmp_path, bad)


def test_a_relative_workspace_root_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        path = workspace_path(Path("workspaces"), "task-1")
        assert path == (tmp_path / name).resolve() / "workspaces" / "task-1"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"[-+*/%() 0-9.^,]{1,40}", fullmatch=True))
def test_calculator_tool_always_answers_with_a_result(text: str) -> None:
    ctx = ToolContext(task_id="t", step_id="s", workspace=Path("/nonexistent"))
    result = asyncio.run(
        CalculatorTool().run(CalculatorTool.args_model(expression=text or "1"), ctx)
    )
    assert isinstance(result, ToolResult)
    try:
        expected = calculate(text or "1")
    except AgentError as exc:
        assert not result.ok and result.error == exc.message
    else:
        assert result.ok and float(result.output) == pytest.approx(expected, rel=1e-9)
