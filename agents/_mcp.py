"""MCP servers' tools as typed tools: one ``TypedTool`` per tool a server lists.

``load_mcp_tools`` connects to each configured Model Context Protocol server (a subprocess over
stdio, or streamable HTTP), lists its tools and builds one ``McpTool`` per tool, named
``<server>_<tool>``, with a pydantic argument model built from the tool's JSON ``inputSchema``.
The tools go into a ``ToolRegistry`` next to the built-in ones, so allow-lists, argument
validation and timeouts apply to them unchanged.

Connections: each server's session lives in a task of its own, on the event loop that loaded
the toolset (the mcp client's transports run anyio task groups, and a transport failure
cancels the task that entered them; owning the session in a dedicated task keeps that away
from the caller). A call on a dropped connection comes back as a failed ``ToolResult``; the
next call opens a new connection, or reports the server down. Nothing is retried here: the
executor's attempt counter owns retries, and a tool call with a side effect must not run
twice silently.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import keyword
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    RequestParamsMeta,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp_types import Tool as McpToolInfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from protocols import ConfigurationError

_SERVER_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,31}$")
_NAME_LIMIT = 64
_CLOSE_GRACE_S = 5.0
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class McpServerSettings(BaseModel):
    """One MCP server whose tools the team may use.

    Example (YAML)::

        - name: github
          transport: stdio
          command: npx
          args: ["-y", "@modelcontextprotocol/server-github"]
          env: {GITHUB_PERSONAL_ACCESS_TOKEN: "..."}
          high_impact: [create_issue]
        - name: search
          transport: http
          url: https://mcp.example.com/mcp
          headers: {Authorization: "Bearer ..."}
          tools: [web_search]
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Prefix of the server's tools (``<name>_<tool>``).")
    transport: Literal["stdio", "http"] = Field(
        description="'stdio': start `command` and talk over its stdin/stdout; "
        "'http': streamable HTTP at `url`."
    )
    command: str | None = Field(default=None, description="stdio: executable to start.")
    args: tuple[str, ...] = Field(default=(), description="stdio: its command-line arguments.")
    env: dict[str, SecretStr] | None = Field(
        default=None,
        description="stdio: extra environment variables, over the mcp package's safe defaults "
        "(PATH, HOME, ...); the rest of this process's environment is not passed on.",
    )
    cwd: Path | None = Field(default=None, description="stdio: working directory.")
    url: str | None = Field(default=None, description="http: the server's MCP endpoint URL.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="http: headers sent with every request (auth)."
    )
    tools: tuple[str, ...] | None = Field(
        default=None,
        description="The server's tool names (unprefixed) to expose; None exposes all.",
    )
    high_impact: tuple[str, ...] = Field(
        default=(), description="Tool names (unprefixed) that need human approval first."
    )
    timeout_s: float = Field(default=30.0, gt=0, le=3600, description="Per-call timeout.")
    connect_timeout_s: float = Field(
        default=15.0, gt=0, le=300, description="Limit on connecting and listing tools."
    )
    max_output_chars: int = Field(
        default=20_000, ge=64, description="Characters of a tool's output passed on."
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_prefix(cls, value: str) -> str:
        if not _SERVER_NAME.match(value):
            raise ValueError(
                f"server name {value!r} must start with a letter and hold only letters, digits, "
                "'_' and '-' (at most 32 characters): it prefixes the tool names"
            )
        return value

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerSettings:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(
                    f"MCP server {self.name!r}: transport 'stdio' needs `command`, the "
                    "executable that starts the server (e.g. 'npx' or 'uvx')"
                )
            if self.url is not None or self.headers:
                raise ValueError(
                    f"MCP server {self.name!r}: `url` and `headers` are for transport 'http'; "
                    "remove them or set transport: http"
                )
        else:
            if not self.url:
                raise ValueError(
                    f"MCP server {self.name!r}: transport 'http' needs `url`, the server's "
                    "MCP endpoint (e.g. 'https://host/mcp')"
                )
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"MCP server {self.name!r}: `url` must be an http:// or https:// URL "
                    "with a host"
                )
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError(
                    f"MCP server {self.name!r}: `command`, `args`, `env` and `cwd` are for "
                    "transport 'stdio'; remove them or set transport: stdio"
                )
        _no_repeats(self.name, "tools", self.tools or ())
        _no_repeats(self.name, "high_impact", self.high_impact)
        if self.tools is not None:
            hidden = sorted(set(self.high_impact) - set(self.tools))
            if hidden:
                raise ValueError(
                    f"MCP server {self.name!r}: high_impact names {hidden}, which `tools` does "
                    "not expose; add them to `tools` or remove them from high_impact"
                )
        return self

    def describe(self) -> str:
        """Where the server is, for messages (no secrets)."""
        if self.transport == "stdio":
            return f"stdio: {' '.join([self.command or '', *self.args])}"
        return f"http: {self.url}"


def _no_repeats(server: str, field: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"MCP server {server!r}: {field} lists {name!r} twice")
        seen.add(name)


class McpSettings(BaseModel):
    """The MCP servers of a team (a branch for the settings tree)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: tuple[McpServerSettings, ...] = Field(
        default=(), description="Servers whose tools are loaded; names must be unique."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> McpSettings:
        _no_repeats("(all)", "servers", (s.name for s in self.servers))
        return self


class _ServerDown(Exception):
    """A server could not be reached; the message says why."""


def _cause(exc: BaseException | None) -> str:
    """One line on what went wrong, from the first real error inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        leaves = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (leaves or list(exc.exceptions))[0]
    if exc is None:
        return "unknown error"
    text = str(exc).strip()
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:300]


class _Session:
    """One connection to one server, entered and left in a task of its own."""

    def __init__(self, settings: McpServerSettings) -> None:
        self._settings = settings
        self._settled = asyncio.Event()
        self._closing = asyncio.Event()
        self.client: Client | None = None
        self.failure: BaseException | None = None
        self.broken = False
        self._task = asyncio.create_task(self._own(), name=f"mcp-session:{settings.name}")

    @property
    def usable(self) -> bool:
        return not (self.broken or self._task.done() or self.failure is not None)

    async def wait_ready(self, timeout_s: float) -> Client:
        try:
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except TimeoutError:
            raise _ServerDown(f"no answer within {timeout_s:g} s") from None
        if self.client is None:
            raise _ServerDown(_cause(self.failure))
        return self.client

    async def close(self) -> None:
        self._closing.set()
        if not self._settled.is_set():
            self._task.cancel()
        done, pending = await asyncio.wait({self._task}, timeout=_CLOSE_GRACE_S)
        for task in pending:
            task.cancel()
        for task in done:  # read, so asyncio does not log it as never retrieved
            if not task.cancelled():
                task.exception()

    async def _own(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                self.client = await stack.enter_async_context(await _client(self._settings, stack))
                self._settled.set()
                await self._closing.wait()
        except Exception as exc:  # the connection ends here; callers read `failure`
            self.failure = exc
        finally:
            self.client = None if self.failure is not None else self.client
            self._settled.set()


async def _client(settings: McpServerSettings, stack: AsyncExitStack) -> Client:
    # cache=None: a reconnect must see the server's current tool listing, not a cached one.
    if settings.transport == "stdio":
        params = StdioServerParameters(
            command=settings.command or "",
            args=list(settings.args),
            env={k: v.get_secret_value() for k, v in (settings.env or {}).items()} or None,
            cwd=settings.cwd,
        )
        return Client(params, cache=None)
    headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
    http = await stack.enter_async_context(
        httpx2.AsyncClient(headers=headers, timeout=_HTTP_TIMEOUT)
    )
    return Client(streamable_http_client(settings.url or "", http_client=http), cache=None)


class _Server:
    """A configured server and its current session; reconnects when the session broke."""

    def __init__(self, settings: McpServerSettings) -> None:
        self.settings = settings
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._closed = False

    async def client(self) -> Client:
        """The live client, connecting first if needed.

        Raises:
            _ServerDown: When the server cannot be reached.
        """
        if asyncio.get_running_loop() is not self._loop:
            raise _ServerDown(
                "the MCP toolset was loaded on another event loop; load it on the loop that "
                "runs the tool registry"
            )
        async with self._lock:
            if self._closed:
                raise _ServerDown("the MCP toolset is closed")
            session = self._session
            if session is not None and not session.usable:
                self._session = None
                await session.close()
                session = None
            if session is None:
                session = self._session = _Session(self.settings)
            try:
                return await session.wait_ready(self.settings.connect_timeout_s)
            except _ServerDown:
                self._session = None
                await session.close()
                raise

    def drop(self, client: Client) -> None:
        """Marks the session of ``client`` broken: the next call reconnects."""
        if self._session is not None and self._session.client is client:
            self._session.broken = True

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _list_tools(client: Client) -> list[McpToolInfo]:
    tools: list[McpToolInfo] = []
    cursor: str | None = None
    for _ in range(1000):  # a server whose cursor never ends cannot hang the load
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class McpTool(TypedTool[ToolArgs]):
    """One tool of an MCP server, run through the server's ``tools/call``.

    The validated arguments are sent as the server named them (unset optional arguments are
    left out, so the server applies its defaults). The call carries the step's idempotency
    key in the request ``_meta`` as ``{"idempotency_key": "task:step:attempt"}``, for servers
    that deduplicate side effects.
    """

    uses_workspace = False

    def __init__(self, server: _Server, info: McpToolInfo, *, name: str) -> None:
        settings = server.settings
        self.name = name
        self.remote_name = info.name
        self.server_name = settings.name
        self.description = (
            info.description or info.title or f"Tool {info.name!r} of MCP server {settings.name!r}."
        )
        self.input_schema: dict[str, Any] = copy.deepcopy(info.input_schema)
        self.args_model = args_model_from_schema(self.input_schema, name=name)
        self.timeout_s = settings.timeout_s
        self.impact = "high" if info.name in settings.high_impact else "low"
        self._server = server
        self._max_chars = settings.max_output_chars

    def function_spec(self) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry, with the server's own ``inputSchema``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.input_schema),
            },
        }

    async def run(self, args: ToolArgs, ctx: ToolContext) -> ToolResult:
        """Calls the tool on the server; every failure is a failed result."""
        arguments = args.model_dump(mode="json", by_alias=True, exclude_unset=True)
        try:
            client = await self._server.client()
        except _ServerDown as exc:
            return self.fail(
                f"MCP server {self.server_name!r} is down ({exc}); the call was not made. "
                "The next call tries to connect again."
            )
        meta = cast(RequestParamsMeta, {"idempotency_key": ctx.idempotency_key})
        try:
            result = await client.call_tool(
                self.remote_name, arguments, read_timeout_seconds=self.timeout_s, meta=meta
            )
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                return self.fail(f"no result within {self.timeout_s:g} s", code="timeout")
            if exc.code != CONNECTION_CLOSED:
                return self.fail(f"MCP server {self.server_name!r} refused the call: {exc}")
            cause = _cause(exc)
        except ValidationError as exc:
            return self.fail(
                f"MCP server {self.server_name!r} sent a result that is not valid MCP "
                f"({exc.error_count()} problems)"
            )
        except Exception as exc:  # transport failures come in many types; all end the session
            cause = _cause(exc)
        else:
            return self._result(result)
        self._server.drop(client)
        return self.fail(
            f"lost the connection to MCP server {self.server_name!r} during the call ({cause}); "
            "whether the call took effect is unknown. The next call reconnects."
        )

    def _result(self, result: CallToolResult) -> ToolResult:
        text = _content_text(result)
        if result.is_error:
            return self.fail(text[: self._max_chars] or "the tool reported an error, no message")
        if len(text) > self._max_chars:
            return self.result(text[: self._max_chars], truncated=True)
        return self.result(text)


def _content_text(result: CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource):
            res = block.resource
            text = res.text if isinstance(res, TextResourceContents) else None
            parts.append(text if text is not None else f"[binary resource {res.uri}]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource {block.uri}]")
        elif isinstance(block, ImageContent | AudioContent):
            parts.append(f"[{block.type} {block.mime_type}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def tool_name(server: str, tool: str) -> str:
    """``<server>_<tool>`` fitted to the registry's name pattern.

    Characters outside ``[a-zA-Z0-9_-]`` become ``_``; a name over 64 characters is cut and
    ends in a hash of the tool's name, so cut names stay distinct.
    """
    name = f"{server}_{re.sub(r'[^a-zA-Z0-9_-]', '_', tool)}"
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_LIMIT - 9]}_{digest}"
    return name


class McpToolset:
    """Connections to MCP servers and the typed tools they offer.

    Use ``load_mcp_tools`` (or ``async with McpToolset(servers) as toolset``), pass
    ``toolset.tools`` to a ``ToolRegistry``, and ``close()`` the toolset when the team stops.
    The tools must be called on the event loop that loaded them.

    Args:
        servers: The servers; names must be unique.
    """

    def __init__(self, servers: Sequence[McpServerSettings]) -> None:
        self._settings = McpSettings(servers=tuple(servers)).servers
        self._servers: list[_Server] = []
        self._tools: tuple[McpTool, ...] = ()

    @property
    def tools(self) -> tuple[McpTool, ...]:
        """Every exposed tool of every server, in server order."""
        return self._tools

    async def start(self) -> None:
        """Connects to every server and builds its tools.

        Raises:
            ConfigurationError: When a server cannot be reached or listed, a configured tool
                name is not offered, or two tools end up with one name. Nothing stays open.
        """
        if self._servers:
            raise RuntimeError("this McpToolset was started already")
        self._servers = [_Server(s) for s in self._settings]
        outcomes = await asyncio.gather(*(self._load(server) for server in self._servers))
        failures = [o for o in outcomes if isinstance(o, str)]
        if failures:
            await self.close()
            raise ConfigurationError("; ".join(failures))
        tools = [tool for o in outcomes if not isinstance(o, str) for tool in o]
        names: dict[str, McpTool] = {}
        for tool in tools:
            if tool.name in names:
                other = names[tool.name]
                await self.close()
                raise ConfigurationError(
                    f"MCP tools {other.server_name}/{other.remote_name!r} and "
                    f"{tool.server_name}/{tool.remote_name!r} are both named {tool.name!r}; "
                    "expose only one of them with `tools`"
                )
            names[tool.name] = tool
        self._tools = tuple(tools)

    async def close(self) -> None:
        """Closes every connection (stops stdio servers); later calls fail cleanly."""
        await asyncio.gather(*(server.close() for server in self._servers))

    async def __aenter__(self) -> McpToolset:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _load(self, server: _Server) -> list[McpTool] | str:
        """The server's tools, or why they could not be loaded."""
        settings = server.settings
        where = f"MCP server {settings.name!r} ({settings.describe()})"
        try:
            client = await server.client()
            infos = await asyncio.wait_for(_list_tools(client), settings.connect_timeout_s)
        except _ServerDown as exc:
            hint = (
                "; check that the command starts an MCP server on stdio (its stderr goes to "
                "this process's stderr)"
                if settings.transport == "stdio" and "Connection closed" in str(exc)
                else ""
            )
            return f"could not connect to {where}: {exc}{hint}"
        except TimeoutError:
            return f"{where} did not list its tools within {settings.connect_timeout_s:g} s"
        except Exception as exc:  # whatever the transport raised, the user's setup must change
            return f"could not list the tools of {where}: {_cause(exc)}"
        offered = {info.name: info for info in infos}
        wanted = settings.tools if settings.tools is not None else tuple(offered)
        unknown = sorted((set(wanted) | set(settings.high_impact)) - offered.keys())
        if unknown:
            return (
                f"{where} has no tool named {', '.join(map(repr, unknown))}; "
                f"it offers: {', '.join(sorted(offered)) or 'none'}"
            )
        try:
            return [
                McpTool(server, offered[name], name=tool_name(settings.name, name))
                for name in wanted
            ]
        except (TypeError, ValueError) as exc:  # pydantic could not build a model
            return f"{where}: a tool's inputSchema cannot be used ({_cause(exc)})"


async def load_mcp_tools(servers: Sequence[McpServerSettings]) -> McpToolset:
    """Connects to the servers and returns the started toolset.

    Example::

        toolset = await load_mcp_tools(settings.mcp.servers)
        registry = ToolRegistry([*builtin_tools, *toolset.tools])
        ...
        await toolset.close()

    Raises:
        ConfigurationError: When a server cannot be reached (the message names it and says
            why) or its tools do not match the settings.
    """
    toolset = McpToolset(servers)
    await toolset.start()
    return toolset


# --- JSON Schema -> pydantic ------------------------------------------------------------------

_MAX_DEPTH = 16


class _OpenToolArgs(ToolArgs):
    model_config = ConfigDict(frozen=True, extra="allow")


class _Nested(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class _ClosedNested(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def args_model_from_schema(schema: Mapping[str, Any], *, name: str) -> type[ToolArgs]:
    """A ``ToolArgs`` model that validates what ``schema`` (a tool's ``inputSchema``) describes.

    Converted: ``type`` (string, number, integer, boolean, null, array, object, and lists of
    them), ``properties`` with ``required`` (an optional property without a ``default``
    becomes ``T | None = None`` and is left out of the call when unset), ``default``,
    ``description``, ``enum`` and ``const`` of scalars (``Literal``), ``anyOf``/``oneOf``
    (a union), a one-member ``allOf``, local ``$ref`` into ``$defs``/``definitions``, array
    ``items``, object ``additionalProperties`` (a schema, or ``false`` to refuse unknown
    keys), and the bounds ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/
    ``multipleOf``/``minLength``/``maxLength``/``minItems``/``maxItems``.

    Falls back to ``JsonValue`` (any JSON value, still typed) for: ``allOf`` with several
    members, ``not``, ``if``/``then``/``else``, ``patternProperties``, tuple ``prefixItems``,
    ``enum``/``const`` with non-scalar values, remote or unresolvable ``$ref``, the point where
    a recursive ``$ref`` refers back to itself, nesting deeper than 16 levels, and unknown
    types. Not checked here (the server still
    checks them): ``pattern``, ``format``, ``uniqueItems``, ``min``/``maxProperties``,
    ``dependentRequired`` and ``oneOf`` exclusivity. At the top level, unknown arguments are
    refused unless the schema says ``additionalProperties: true`` (or gives a schema).
    """
    root = schema if isinstance(schema, Mapping) else {}
    converter = _SchemaConverter(root)
    extra = root.get("additionalProperties")
    base = _OpenToolArgs if extra is True or isinstance(extra, Mapping) else ToolArgs
    model = converter.model(root, name=_model_name(name), base=base, depth=0)
    return cast(type[ToolArgs], model)


def _model_name(name: str) -> str:
    return re.sub(r"\W", "_", name) + "_args"


class _SchemaConverter:
    def __init__(self, root: Mapping[str, Any]) -> None:
        defs = root.get("$defs", root.get("definitions"))
        self._defs: Mapping[str, Any] = defs if isinstance(defs, Mapping) else {}
        self._models = 0
        self._refs: dict[str, Any] = {}
        self._resolving: set[str] = set()

    def model(
        self, schema: Mapping[str, Any], *, name: str, base: type[BaseModel], depth: int
    ) -> type[BaseModel]:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required")
        required_names = (
            [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        )
        fields: dict[str, Any] = {}
        used: set[str] = set(props)
        for prop, sub in props.items():
            fields[_field_name(str(prop), used)] = self._field(
                str(prop), sub, required=prop in required_names, depth=depth + 1
            )
        for prop in required_names:
            if prop not in props:  # required but undescribed: any JSON value
                fields[_field_name(prop, used)] = (JsonValue, Field(alias=prop))
        return cast(
            type[BaseModel],
            create_model(name, __base__=base, __doc__=schema.get("description"), **fields),
        )

    def _field(self, prop: str, sub: Any, *, required: bool, depth: int) -> tuple[Any, Any]:
        annotation = self.annotation(sub, depth)
        info = sub if isinstance(sub, Mapping) else {}
        description = info.get("description") if isinstance(info.get("description"), str) else None
        if required:
            default: Any = ...
        elif "default" in info:
            default = copy.deepcopy(info["default"])
        else:
            annotation, default = _union([annotation, None]), None
        return annotation, Field(default, alias=prop, description=description)

    def annotation(self, schema: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
            return JsonValue
        if "$ref" in schema:
            return self._ref(schema["$ref"], depth)
        if "const" in schema:
            return _literal([schema["const"]])
        if "enum" in schema:
            values = schema["enum"]
            return _literal(values) if isinstance(values, list) and values else JsonValue
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return _union([self.annotation(o, depth + 1) for o in options])
        all_of = schema.get("allOf")
        if isinstance(all_of, list):
            return self.annotation(all_of[0], depth + 1) if len(all_of) == 1 else JsonValue
        kind = schema.get("type")
        if isinstance(kind, list) and kind:
            return _union([self._typed(schema, k, depth) for k in kind])
        if isinstance(kind, str):
            return self._typed(schema, kind, depth)
        if isinstance(schema.get("properties"), Mapping):
            return self._typed(schema, "object", depth)
        return JsonValue

    def _typed(self, schema: Mapping[str, Any], kind: Any, depth: int) -> Any:
        match kind:
            case "string":
                return _bounded(str, schema, min_length="minLength", max_length="maxLength")
            case "integer" | "number":
                return _bounded(
                    int if kind == "integer" else float,
                    schema,
                    ge="minimum",
                    le="maximum",
                    gt="exclusiveMinimum",
                    lt="exclusiveMaximum",
                    multiple_of="multipleOf",
                )
            case "boolean":
                return bool
            case "null":
                return None
            case "array":
                items = schema.get("items")
                inner = (
                    self.annotation(items, depth + 1) if isinstance(items, Mapping) else JsonValue
                )
                return _bounded(list[inner], schema, min_length="minItems", max_length="maxItems")  # type: ignore[valid-type]
            case "object":
                return self._object(schema, depth)
        return JsonValue

    def _object(self, schema: Mapping[str, Any], depth: int) -> Any:
        extra = schema.get("additionalProperties")
        if isinstance(schema.get("properties"), Mapping) and schema["properties"]:
            self._models += 1
            base = _ClosedNested if extra is False else _Nested
            title = schema.get("title")
            name = re.sub(r"\W", "_", title) if isinstance(title, str) else f"Object{self._models}"
            return self.model(schema, name=name, base=base, depth=depth + 1)
        if isinstance(extra, Mapping):
            return dict[str, self.annotation(extra, depth + 1)]  # type: ignore[misc]
        return dict[str, JsonValue]

    def _ref(self, ref: Any, depth: int) -> Any:
        # One annotation per definition (a schema may point at it many times), and a
        # definition that refers to itself is cut there to any JSON value.
        if not isinstance(ref, str) or ref in self._resolving:
            return JsonValue
        if ref not in self._refs:
            target = next(
                (
                    self._defs.get(ref[len(p) :])
                    for p in ("#/$defs/", "#/definitions/")
                    if ref.startswith(p)
                ),
                None,
            )
            self._resolving.add(ref)
            try:
                self._refs[ref] = (
                    JsonValue if target is None else self.annotation(target, depth + 1)
                )
            finally:
                self._resolving.discard(ref)
        return self._refs[ref]


def _field_name(prop: str, used: set[str]) -> str:
    """A Python name for a property; the property's own name stays its alias."""
    if (
        prop.isidentifier()
        and not keyword.iskeyword(prop)
        and not prop.startswith(("_", "model_"))
        and not hasattr(BaseModel, prop)
    ):
        return prop
    base = "f_" + (re.sub(r"\W", "_", prop) or "field")
    name = base
    while name in used:
        name += "_"
    used.add(name)
    return name


def _literal(values: list[Any]) -> Any:
    if all(v is None or isinstance(v, str | int | bool) for v in values):
        return Literal.__getitem__(tuple(values))
    return JsonValue


def _union(options: list[Any]) -> Any:
    if any(o is JsonValue for o in options):
        return JsonValue
    unique = list(dict.fromkeys(options))
    return unique[0] if len(unique) == 1 else typing.Union.__getitem__(tuple(unique))


def _bounded(annotation: Any, schema: Mapping[str, Any], **keys: str) -> Any:
    """``annotation`` with the JSON Schema bounds named in ``keys`` (pydantic name -> key)."""
    bounds = {
        field: schema[key]
        for field, key in keys.items()
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool)
    }
    return typing.Annotated[annotation, Field(**bounds)] if bounds else annotation
