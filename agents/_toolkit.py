"""Typed tools: argument models, results, per-agent allow-lists, and the registry that runs them.

A model asks for a tool by name with JSON arguments. The registry decides, outside the model,
whether this agent may use it (``ToolPolicy``), validates the arguments with the tool's
pydantic model, and runs it under the tool's timeout through a ``ToolRunner`` (in this process,
or as a Ray task with the tool's own resources). Whatever goes wrong comes back as a
``ToolResult`` with ``ok=False`` and an error that says what to fix: no exception escapes and
no traceback reaches a prompt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory import Episode
from memory._episode import MAX_CONTENT_CHARS
from protocols import ConfigurationError, ToolCall, TroupeError

Impact = Literal["low", "high"]
"""``high``: the tool acts on the world in a way that always needs human approval first."""

ResultCode = Literal[
    "ok", "bad_arguments", "not_allowed", "unknown_tool", "timeout", "failed", "disabled"
]

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$")
_TASK_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # every TaskId fits


class ToolArgs(BaseModel):
    """Base of every tool's argument model: unknown arguments are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolResources(BaseModel):
    """Resources a heavy tool reserves when it runs as a Ray task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = Field(default=1.0, ge=0, description="CPUs the Ray task reserves.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs the Ray task reserves.")
    memory_mb: int | None = Field(default=None, ge=1, description="Ray memory reservation.")


class ToolContext(BaseModel):
    """Where a tool call happens: the task, the step, the attempt and the task's workspace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str = Field(min_length=1, description="Task the call belongs to.")
    step_id: str = Field(min_length=1, description="Plan step the call belongs to.")
    attempt: int = Field(default=1, ge=1, description="Attempt of the step (1 = first).")
    workspace: Path = Field(description="The task's workspace directory; tools stay inside it.")
    agent: str = Field(default="executor", min_length=1, description="Calling agent.")
    namespace: str = Field(default="default", min_length=1, description="Memory namespace.")

    @property
    def idempotency_key(self) -> str:
        """``task:step:attempt``: a side effect done twice under one key must happen once."""
        return f"{self.task_id}:{self.step_id}:{self.attempt}"


class ToolResult(BaseModel):
    """What a tool call came to. ``error`` says what to fix when ``ok`` is false."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: str = Field(description="Tool that was asked for.")
    ok: bool = Field(description="Whether the tool did what was asked.")
    output: str = Field(default="", description="The tool's output (text for the model).")
    error: str | None = Field(default=None, description="Why it failed and what to fix.")
    code: ResultCode = Field(default="ok", description="Kind of outcome.")
    truncated: bool = Field(default=False, description="Output was cut to a limit.")
    duration_s: float = Field(default=0.0, ge=0, description="Wall-clock seconds of the call.")

    @classmethod
    def failure(cls, tool: str, error: str, *, code: ResultCode = "failed") -> ToolResult:
        """A failed result."""
        return cls(tool=tool, ok=False, error=error, code=code)

    def text(self) -> str:
        """What the model sees: the output, or the error."""
        return self.output if self.ok else f"error ({self.code}): {self.error}"

    def as_tool_call(self, arguments: str) -> ToolCall:
        """The protocol record of this call, as carried in a ``StepResult``."""
        return ToolCall(tool=self.tool, arguments=arguments, output=self.text(), ok=self.ok)


A = TypeVar("A", bound=ToolArgs)


class TypedTool(ABC, Generic[A]):
    """A tool with a typed argument model.

    Subclasses set the class attributes and implement ``run``; ``run`` returns a failed
    ``ToolResult`` for expected failures and may raise for unexpected ones (the registry turns
    those into results too).
    """

    name: str
    description: str
    args_model: type[A]
    timeout_s: float = 30.0
    impact: Impact = "low"
    resources: ToolResources | None = None
    uses_workspace: bool = True
    """False for tools that never touch files: the caller need not create the workspace."""

    @abstractmethod
    async def run(self, args: A, ctx: ToolContext) -> ToolResult:
        """Runs the tool on validated arguments."""

    def function_spec(self) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry of this tool."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def result(self, output: str, *, truncated: bool = False) -> ToolResult:
        """A successful result of this tool."""
        return ToolResult(tool=self.name, ok=True, output=output, truncated=truncated)

    def fail(self, error: str, *, code: ResultCode = "failed") -> ToolResult:
        """A failed result of this tool."""
        return ToolResult.failure(self.name, error, code=code)


class ToolRunner(Protocol):
    """Runs a tool's ``run`` somewhere: in this process or as a Ray task."""

    async def run(self, tool: TypedTool[Any], args: ToolArgs, ctx: ToolContext) -> ToolResult:
        """Runs the tool (the caller applies the timeout)."""
        ...


class LocalToolRunner:
    """Runs tools in this process, on this event loop."""

    async def run(self, tool: TypedTool[Any], args: ToolArgs, ctx: ToolContext) -> ToolResult:
        """Awaits the tool's ``run``."""
        return await tool.run(args, ctx)


class Refusal(BaseModel):
    """A call the allow-list refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: str = Field(description="Tool the model asked for.")
    task_id: str = Field(description="Task of the call.")
    step_id: str = Field(description="Step of the call.")


class ToolPolicy:
    """One agent's allow-list, enforced by the registry whatever the model asks for.

    Refused calls are kept (``refusals``) so they can be reported in the trace.

    Args:
        allowed: Names of the tools this agent may call.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(allowed)
        self.refusals: list[Refusal] = []

    def allows(self, name: str) -> bool:
        """Whether ``name`` is on the list."""
        return name in self.allowed

    def refuse(self, name: str, ctx: ToolContext) -> ToolResult:
        """Records a refused call and returns the refusal."""
        self.refusals.append(Refusal(tool=name, task_id=ctx.task_id, step_id=ctx.step_id))
        allowed = ", ".join(sorted(self.allowed)) or "none"
        return ToolResult.failure(
            name,
            f"tool {name!r} is not allowed for this agent; allowed tools: {allowed}",
            code="not_allowed",
        )


class ToolRegistry:
    """The typed tools a team knows, and the one place tool calls go through.

    Args:
        tools: The tools; names must be unique.
        runner: Where tools run (default: in this process).
    """

    def __init__(self, tools: Iterable[TypedTool[Any]], *, runner: ToolRunner | None = None):
        self._tools: dict[str, TypedTool[Any]] = {}
        self.extend(tools)
        self._runner: ToolRunner = runner or LocalToolRunner()

    def extend(self, tools: Iterable[TypedTool[Any]]) -> None:
        """Adds tools (an MCP server's, once loaded); all or none of them are added.

        Raises:
            ConfigurationError: When a name does not fit the pattern or is taken already.
        """
        added: dict[str, TypedTool[Any]] = {}
        for tool in tools:
            if not _NAME.match(tool.name):
                raise ConfigurationError(f"tool name {tool.name!r} must match {_NAME.pattern}")
            if tool.name in self._tools or tool.name in added:
                raise ConfigurationError(f"two tools are named {tool.name!r}")
            added[tool.name] = tool
        self._tools.update(added)

    def names(self) -> list[str]:
        """Every tool's name, sorted."""
        return sorted(self._tools)

    def get(self, name: str) -> TypedTool[Any] | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def function_specs(
        self, allowed: ToolPolicy | Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """The OpenAI ``tools=[...]`` list of the tools an agent may call, sorted by name.

        Args:
            allowed: A policy or names; None means every tool. Unknown names are ignored.
        """
        names = self._allowed_names(allowed)
        return [self._tools[n].function_spec() for n in sorted(names & self._tools.keys())]

    async def call(
        self,
        name: str,
        arguments: str | Mapping[str, Any],
        ctx: ToolContext,
        *,
        policy: ToolPolicy,
    ) -> ToolResult:
        """Checks, validates and runs one call; always returns a result.

        Args:
            name: Tool the model asked for.
            arguments: JSON text (as models send it) or an already-decoded mapping.
            ctx: Task, step, attempt and workspace of the call.
            policy: The calling agent's allow-list.
        """
        started = time.monotonic()
        result = await self._call(name, arguments, ctx, policy)
        return result.model_copy(update={"duration_s": time.monotonic() - started})

    async def _call(
        self, name: str, arguments: str | Mapping[str, Any], ctx: ToolContext, policy: ToolPolicy
    ) -> ToolResult:
        if not policy.allows(name):
            return policy.refuse(name, ctx)
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self.names())
            return ToolResult.failure(
                name, f"unknown tool {name!r}; known tools: {known}", code="unknown_tool"
            )
        args = parse_arguments(tool, arguments)
        if isinstance(args, ToolResult):
            return args
        try:
            return await asyncio.wait_for(self._runner.run(tool, args, ctx), tool.timeout_s)
        except TimeoutError:
            return tool.fail(f"no result within {tool.timeout_s:g} s", code="timeout")
        except TroupeError as exc:
            return tool.fail(exc.message)
        except Exception as exc:  # a tool's bug is the step's failure, never the agent's crash
            return tool.fail(f"{type(exc).__name__}: {exc}"[:500])

    def _allowed_names(self, allowed: ToolPolicy | Iterable[str] | None) -> set[str]:
        if allowed is None:
            return set(self._tools)
        if isinstance(allowed, ToolPolicy):
            return set(allowed.allowed)
        return set(allowed)


def parse_arguments(tool: TypedTool[A], arguments: str | Mapping[str, Any]) -> A | ToolResult:
    """Validates a call's arguments; a failed result says what to fix."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return tool.fail(
                f"arguments are not valid JSON ({exc.msg} at position {exc.pos}); send an "
                f"object matching the schema of {tool.name!r}",
                code="bad_arguments",
            )
    if not isinstance(arguments, Mapping):
        return tool.fail(
            f"arguments must be a JSON object, got {type(arguments).__name__}",
            code="bad_arguments",
        )
    try:
        return tool.args_model.model_validate(dict(arguments))
    except ValidationError as exc:
        return tool.fail(
            f"bad arguments for {tool.name!r}: {_problems(exc)}",
            code="bad_arguments",
        )


def _problems(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def tool_episode(
    result: ToolResult, ctx: ToolContext, *, arguments: str, call_index: int = 0
) -> Episode:
    """The memory record of a tool call: provenance ``tool``, untrusted, id unique per call.

    Args:
        result: What the call came to.
        ctx: Where it happened.
        arguments: The arguments as the model sent them (kept, clipped, in metadata).
        call_index: Which call of this step attempt it was (keeps episode ids distinct).
    """
    content = result.text() or "(empty)"
    if len(content) > MAX_CONTENT_CHARS:
        content = content[: MAX_CONTENT_CHARS - 1] + "…"
    return Episode.create(
        kind="tool_result",
        content=content,
        agent=ctx.agent,
        namespace=ctx.namespace,
        task_id=ctx.task_id,
        step_id=ctx.step_id,
        key=f"{ctx.idempotency_key}:{call_index}:{result.tool}",
        importance=0.5 if result.ok else 0.7,
        tags=(result.tool, "ok" if result.ok else "failed"),
        provenance="tool",
        trusted=False,
        metadata={
            "tool": result.tool,
            "code": result.code,
            "idempotency_key": ctx.idempotency_key,
            "arguments": arguments[:2000],
        },
    )


def workspace_path(root: Path, task_id: str) -> Path:
    """The workspace directory of a task under ``root``, without creating it.

    Raises:
        ConfigurationError: When the task id cannot be a directory name.
    """
    if not _TASK_DIR.match(task_id) or task_id in {".", ".."}:
        raise ConfigurationError(f"task id {task_id!r} cannot name a workspace directory")
    return _resolved(root if root.is_absolute() else Path(os.getcwd()) / root) / task_id


@functools.lru_cache(maxsize=64)
def _resolved(root: Path) -> Path:
    # Resolving walks the path with a syscall per part; workspace roots are fixed settings, and
    # an executor asks for every step. (A relative root is taken from the working directory of
    # the moment, then resolved once.)
    return root.resolve()


def task_workspace(root: Path, task_id: str) -> Path:
    """Creates (if needed) and returns the workspace directory of a task under ``root``.

    Raises:
        ConfigurationError: When the task id cannot be a directory name.
    """
    path = workspace_path(root, task_id)
    path.mkdir(parents=True, exist_ok=True)
    return path
