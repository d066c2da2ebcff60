"""The built-in typed tools: calculator, python (sandboxed), files, http_get, memory_search."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents._arithmetic import calculate, format_number
from agents._file_tools import ListFilesTool, ReadFileTool, WriteFileTool
from agents._mcp import McpSettings
from agents._sandbox import Sandbox, SandboxResult, SandboxSettings
from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from memory import EpisodicMemory, RecallQuery
from protocols import AgentError


class HttpGetSettings(BaseModel):
    """``http_get``: off unless enabled, and then only to the listed hosts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="Whether the tool exists at all.")
    allowed_hosts: tuple[str, ...] = Field(
        default=(), description="'host' (any port) or 'host:port'; matched exactly, lowercase."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per-request timeout.")
    max_chars: int = Field(default=20_000, ge=64, description="Characters of body returned.")


BuiltinName = Literal[
    "calculator", "python", "read_file", "write_file", "list_files", "memory_search"
]
BUILTIN_NAMES: tuple[BuiltinName, ...] = get_args(BuiltinName)
"""Every built-in tool but ``http_get`` (which ``http.enabled`` turns on)."""

_CUSTOM_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class ToolsSettings(BaseModel):
    """The team's tools: which built-ins exist, their limits, and custom tools (a settings branch).

    Only the calculator is on by default: the bundled model plans and answers best with few
    tools, and code execution and file access are opted into, like ``http_get``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    builtin: tuple[BuiltinName, ...] = Field(
        default=("calculator",),
        description="Built-in tools to register (http_get is turned on under http).",
    )
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    http: HttpGetSettings = Field(default_factory=HttpGetSettings)
    custom: tuple[str, ...] = Field(
        default=(),
        description="module:callable paths; each callable takes no arguments and returns a "
        "TypedTool or a list of them. Loaded in every agent's process, so the module must be "
        "importable on every node.",
    )
    mcp: McpSettings = Field(
        default_factory=McpSettings,
        description="MCP servers whose tools (named <server>_<tool>) join the team's. Each "
        "agent connects on its own event loop before its first message, so the servers must be "
        "reachable from every node (a stdio server starts once per agent); an unreachable one "
        "fails that agent's messages with a ConfigurationError. With executor_tools set, list "
        "the MCP tool names there too.",
    )

    @field_validator("custom")
    @classmethod
    def _paths_look_like_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in paths if not re.match(_CUSTOM_PATH, p)]
        if bad:
            raise ValueError(f"custom tools must be module:callable paths, not {bad[0]!r}")
        return paths


class CalculatorArgs(ToolArgs):
    """Arguments of ``calculator``."""

    expression: str = Field(
        min_length=1, max_length=200, description="Arithmetic, e.g. '17 * (23 + 4) / 2'."
    )


class CalculatorTool(TypedTool[CalculatorArgs]):
    """Arithmetic, parsed (never evaluated as code)."""

    name = "calculator"
    description = "Compute arithmetic on numbers: + - * / // % ** and parentheses."
    args_model = CalculatorArgs
    timeout_s = 5.0
    uses_workspace = False

    async def run(self, args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
        """The value, formatted like ``format_number``."""
        try:
            return self.result(format_number(calculate(args.expression)))
        except AgentError as exc:
            return self.fail(exc.message, code="bad_arguments")


class PythonArgs(ToolArgs):
    """Arguments of ``python``."""

    code: str = Field(
        min_length=1, max_length=50_000, description="Python source; print what you need."
    )


class PythonTool(TypedTool[PythonArgs]):
    """Runs Python in the sandbox (no network, limits, own uid, workspace only).

    Args:
        settings: Sandbox limits.
    """

    name = "python"
    description = (
        "Run Python 3 code in a sandbox with no network; the working directory is the task "
        "workspace. Print results to stdout."
    )
    args_model = PythonArgs

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self._sandbox = Sandbox(settings)
        # The sandbox kills the code at its own timeout; this one only catches a stuck sandbox.
        self.timeout_s = self._sandbox.settings.timeout_s + 5.0

    async def run(self, args: PythonArgs, ctx: ToolContext) -> ToolResult:
        """stdout (and stderr) of the run; failed unless it exited 0 in time."""
        run = await self._sandbox.run_python(args.code, workspace=ctx.workspace)
        output = run.stdout + (f"\n[stderr]\n{run.stderr}" if run.stderr else "")
        if run.ok:
            return self.result(output, truncated=run.truncated)
        return ToolResult(
            tool=self.name,
            ok=False,
            output=output,
            error=_python_failure(run, self._sandbox.settings),
            code="timeout" if run.timed_out else "failed",
            truncated=run.truncated,
        )


def _python_failure(run: SandboxResult, settings: SandboxSettings) -> str:
    if run.timed_out:
        return f"killed after the {settings.timeout_s:g} s time limit; make the code faster"
    if run.exit_code is not None and run.exit_code < 0:
        return (
            f"killed by signal {-run.exit_code} (a CPU {settings.cpu_s} s, memory "
            f"{settings.memory_mb} MB or process {settings.max_processes} limit)"
        )
    last = run.stderr.strip().splitlines()[-1:] or ["no error output"]
    return f"exit status {run.exit_code}: {last[0]}"


class HttpGetArgs(ToolArgs):
    """Arguments of ``http_get``."""

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL on an allowed host.")


class HttpGetTool(TypedTool[HttpGetArgs]):
    """GET a URL on an allow-listed host; no redirects are followed.

    Args:
        settings: Whether it is on, and the allowed hosts.
        transport: An httpx transport (tests); None is the network.
    """

    name = "http_get"
    description = "Fetch a web page or API response with HTTP GET (allow-listed hosts only)."
    args_model = HttpGetArgs
    uses_workspace = False

    def __init__(
        self, settings: HttpGetSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._transport = transport
        self.timeout_s = settings.timeout_s + 1.0

    def host_allowed(self, url: str) -> str | None:
        """None when ``url`` may be fetched; otherwise why not."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"}:
            return f"only http and https URLs are fetched, not {parts.scheme or 'no scheme'!r}"
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return "the URL's port is not a number"
        allowed = {h.lower() for h in self._settings.allowed_hosts}
        if host and (host in allowed or f"{host}:{port}" in allowed):
            return None
        listed = ", ".join(sorted(allowed)) or "none"
        return f"host {host or '(none)'!r} is not allow-listed; allowed hosts: {listed}"

    async def run(self, args: HttpGetArgs, ctx: ToolContext) -> ToolResult:
        """``HTTP <status>`` and the body, cut at ``max_chars``."""
        if not self._settings.enabled:
            return self.fail("http_get is disabled in this deployment", code="disabled")
        refusal = self.host_allowed(args.url)
        if refusal:
            return self.fail(refusal, code="not_allowed")
        # trust_env=False: proxies and netrc from the environment must not widen the list.
        async with httpx.AsyncClient(
            timeout=self._settings.timeout_s,
            follow_redirects=False,
            trust_env=False,
            transport=self._transport,
        ) as client:
            try:
                response = await client.get(args.url)
            except httpx.HTTPError as exc:
                return self.fail(f"GET {args.url} failed: {type(exc).__name__}: {exc}")
        if response.is_redirect:
            where = response.headers.get("location", "?")
            return self.fail(f"redirect to {where} not followed; fetch it directly if allowed")
        body = response.text
        limit = self._settings.max_chars
        result = ToolResult(
            tool=self.name,
            ok=response.status_code < 400,
            output=f"HTTP {response.status_code}\n{body[:limit]}",
            truncated=len(body) > limit,
        )
        if not result.ok:
            return result.model_copy(update={"error": f"HTTP {response.status_code}"})
        return result


class MemorySearchArgs(ToolArgs):
    """Arguments of ``memory_search``."""

    query: str = Field(min_length=1, max_length=500, description="What to look for.")
    k: int = Field(default=5, ge=1, le=20, description="Most episodes to return.")


class MemorySearchTool(TypedTool[MemorySearchArgs]):
    """Searches episodic memory (the task's namespace).

    Args:
        memory: The episodic memory to recall from.
        max_chars: Characters kept of each episode.
    """

    name = "memory_search"
    description = "Search past episodes (earlier tasks, tool results) in episodic memory."
    args_model = MemorySearchArgs
    timeout_s = 15.0
    uses_workspace = False

    def __init__(self, memory: EpisodicMemory, *, max_chars: int = 400) -> None:
        self._memory = memory
        self._max_chars = max_chars

    async def run(self, args: MemorySearchArgs, ctx: ToolContext) -> ToolResult:
        """One line per episode: kind, provenance, then the content."""
        found = await self._memory.recall(
            RecallQuery(namespace=ctx.namespace, text=args.query, k=args.k)
        )
        lines = [
            f"- [{s.episode.kind}, from {s.episode.provenance}] "
            f"{s.episode.content[: self._max_chars]}"
            for s in found
        ]
        return self.result("\n".join(lines) or "(nothing found)")


def builtin_tools(
    settings: ToolsSettings | None = None, *, memory: EpisodicMemory | None = None
) -> list[TypedTool[Any]]:
    """The built-in tools ``settings.builtin`` names (default: the calculator).

    ``memory_search`` is left out without a memory to search; ``http_get`` is added when
    ``settings.http.enabled``.
    """
    settings = settings or ToolsSettings()
    makers: dict[BuiltinName, Callable[[], TypedTool[Any] | None]] = {
        "calculator": CalculatorTool,
        "python": lambda: PythonTool(settings.sandbox),
        "read_file": ReadFileTool,
        "write_file": WriteFileTool,
        "list_files": ListFilesTool,
        "memory_search": lambda: MemorySearchTool(memory) if memory is not None else None,
    }
    tools = [makers[name]() for name in dict.fromkeys(settings.builtin)]
    if settings.http.enabled:
        tools.append(HttpGetTool(settings.http))
    return [tool for tool in tools if tool is not None]
