"""MCP tools in the registry, against a real MCP server over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agents._mcp import (
    McpServerSettings,
    McpSettings,
    McpToolset,
    args_model_from_schema,
    load_mcp_tools,
    tool_name,
)
from agents._toolkit import ToolContext, ToolPolicy, ToolRegistry, ToolResult
from protocols import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
SERVER_TOOLS = {"add", "add_calls", "shout", "explode", "slow", "pid", "meta.echo", "header"}


def stdio_settings(**overrides: Any) -> McpServerSettings:
    fields: dict[str, Any] = {
        "name": "calc",
        "transport": "stdio",
        "command": sys.executable,
        "args": ("-m", "tests.agents.mcp_server"),
        "cwd": REPO,
        "timeout_s": 1.0,
    }
    return McpServerSettings(**(fields | overrides))


def ctx(step: str = "s1") -> ToolContext:
    return ToolContext(task_id="t-1", step_id=step, workspace=REPO)


class Harness:
    """A started toolset with a registry over its tools, driven from synchronous tests."""

    def __init__(self, toolset: McpToolset, loop: asyncio.AbstractEventLoop) -> None:
        self.toolset = toolset
        self.registry = ToolRegistry(toolset.tools)
        self.policy = ToolPolicy(self.registry.names())
        self.loop = loop

    def call(self, name: str, arguments: Any = None, *, step: str = "s1") -> ToolResult:
        call = self.registry.call(name, arguments or {}, ctx(step), policy=self.policy)
        return self.loop.run_until_complete(call)


@contextmanager
def started(*servers: McpServerSettings) -> Iterator[Harness]:
    """Loads the servers on an event loop of their own; every call runs on that loop."""
    loop = asyncio.new_event_loop()
    try:
        toolset = loop.run_until_complete(load_mcp_tools(servers))
        try:
            yield Harness(toolset, loop)
        finally:
            loop.run_until_complete(toolset.close())
    finally:
        loop.close()


@pytest.fixture(scope="module")
def calc() -> Iterator[Harness]:
    """One stdio server shared by the tests that leave it running."""
    with started(stdio_settings()) as harness:
        yield harness


# --- stdio ------------------------------------------------------------------------------------


def test_stdio_tools_are_listed_with_the_prefix_and_the_servers_descriptions(
    calc: Harness,
) -> None:
    expected = {tool_name("calc", t) for t in SERVER_TOOLS}
    assert set(calc.registry.names()) == expected
    assert "calc_meta_echo" in expected  # '.' is not allowed in registry names
    add = calc.registry.get("calc_add")
    assert add is not None
    assert add.description == "Add two integers."
    assert add.timeout_s == 1.0
    assert {t.impact for t in calc.toolset.tools} == {"low"}


def test_valid_arguments_run_the_tool_and_carry_the_idempotency_key(calc: Harness) -> None:
    result = calc.call("calc_add", '{"a": 2, "b": 40}')
    assert (result.ok, result.code, result.output) == (True, "ok", "42")
    assert calc.call("calc_shout", {"text": "hi", "punctuation": "?"}).output == "HI?"
    assert calc.call("calc_shout", {"text": "hi"}).output == "HI!"  # the server's default
    assert calc.call("calc_meta_echo", step="s7").output == "t-1:s7:1"


def test_invalid_arguments_are_refused_before_the_server_is_called(calc: Harness) -> None:
    calls_before = calc.call("calc_add_calls").output
    wrong_type = calc.call("calc_add", {"a": "two", "b": 1})
    assert wrong_type.code == "bad_arguments"
    assert "a:" in (wrong_type.error or "")
    missing = calc.call("calc_add", {"a": 1})
    assert missing.code == "bad_arguments"
    assert "b: Field required" in (missing.error or "")
    unknown = calc.call("calc_add", {"a": 1, "b": 2, "c": 3})
    assert unknown.code == "bad_arguments"
    assert "c:" in (unknown.error or "")
    not_in_enum = calc.call("calc_shout", {"text": "x", "punctuation": "."})
    assert not_in_enum.code == "bad_arguments"
    assert "punctuation" in (not_in_enum.error or "")
    assert calc.call("calc_add_calls").output == calls_before


def test_a_tool_error_is_a_failed_result_with_the_servers_message(calc: Harness) -> None:
    result = calc.call("calc_explode", {"reason": "the flux capacitor"})
    assert (result.ok, result.code) == (False, "failed")
    assert "exploded: the flux capacitor" in (result.error or "")


def test_a_slow_tool_times_out_and_the_connection_stays_usable(calc: Harness) -> None:
    result = calc.call("calc_slow", {"seconds": 5})
    assert (result.ok, result.code) == (False, "timeout")
    assert "1 s" in (result.error or "")
    assert calc.call("calc_add", {"a": 1, "b": 1}).output == "2"


def test_function_spec_presents_the_servers_input_schema(calc: Harness) -> None:
    add = calc.registry.get("calc_add")
    assert add is not None
    params = add.function_spec()["function"]["parameters"]
    assert params["title"] == "addArguments"  # the server's schema, not our model's
    assert params["required"] == ["a", "b"]
    assert params["properties"]["a"]["type"] == "integer"
    shout = calc.registry.get("calc_shout")
    assert shout is not None
    punctuation = shout.function_spec()["function"]["parameters"]["properties"]["punctuation"]
    assert punctuation["enum"] == ["!", "?"]


def test_the_tools_filter_and_high_impact_mapping() -> None:
    settings = stdio_settings(name="ops", tools=("add", "explode"), high_impact=("explode",))
    with started(settings) as h:
        assert h.registry.names() == ["ops_add", "ops_explode"]
        impacts = {t.name: t.impact for t in h.toolset.tools}
        assert impacts == {"ops_add": "low", "ops_explode": "high"}
        specs = h.registry.function_specs(["ops_add"])
        assert [s["function"]["name"] for s in specs] == ["ops_add"]
        assert h.call("ops_add", {"a": 1, "b": 2}).output == "3"


def test_a_stdio_server_killed_mid_session_fails_the_call_then_restarts() -> None:
    # A generous timeout: the call after the kill starts a new server process first.
    with started(stdio_settings(timeout_s=20.0)) as h:
        first_pid = int(h.call("calc_pid").output)
        os.kill(first_pid, signal.SIGKILL)
        time.sleep(0.2)
        lost = h.call("calc_add", {"a": 1, "b": 2})
        assert (lost.ok, lost.code) == (False, "failed")
        assert "'calc'" in (lost.error or "")
        again = h.call("calc_pid")
        assert again.ok, again.error
        assert int(again.output) != first_pid
        killer = threading.Timer(0.3, os.kill, (int(again.output), signal.SIGKILL))
        killer.start()
        during = h.call("calc_slow", {"seconds": 5})
        killer.join()
        assert (during.ok, during.code) == (False, "failed")
        assert "lost the connection" in (during.error or "")


def test_calls_after_close_fail_cleanly() -> None:
    with started(stdio_settings()) as h:
        h.loop.run_until_complete(h.toolset.close())
        result = h.call("calc_add", {"a": 1, "b": 2})
        assert (result.ok, result.code) == (False, "failed")
        assert "closed" in (result.error or "")


# --- load-time errors -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_error(*servers: McpServerSettings) -> str:
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(load_mcp_tools(list(servers)))
    return info.value.message


def test_unreachable_servers_are_configuration_errors_naming_them() -> None:
    missing = load_error(stdio_settings(name="ghost", command="/nonexistent/mcp-server"))
    assert "'ghost'" in missing
    assert "/nonexistent/mcp-server" in missing
    assert "FileNotFoundError" in missing
    url = f"http://127.0.0.1:{free_port()}/mcp"
    refused = load_error(McpServerSettings(name="remote", transport="http", url=url))
    assert "'remote'" in refused
    assert url in refused
    assert "ConnectError" in refused
    exits = load_error(stdio_settings(name="quitter", args=("-c", "raise SystemExit(3)")))
    assert "'quitter'" in exits
    assert "Connection closed" in exits


def test_a_configured_tool_the_server_lacks_is_a_configuration_error() -> None:
    message = load_error(stdio_settings(tools=("add", "multiply")))
    assert "'calc'" in message
    assert "'multiply'" in message
    assert "shout" in message  # lists what the server offers


# --- streamable HTTP --------------------------------------------------------------------------


class HttpServer:
    """The test server as a subprocess on a free localhost port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.agents.mcp_server", "--http", str(self.port)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, self._log.read_text()[-2000:]
            try:
                httpx.get(self.url, timeout=0.5)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"MCP test server did not answer: {self._log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path_factory.mktemp("mcp") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def http_settings(server: HttpServer, **overrides: Any) -> McpServerSettings:
    fields: dict[str, Any] = {
        "name": "web",
        "transport": "http",
        "url": server.url,
        "headers": {"Authorization": "Bearer s3cret"},
        "timeout_s": 0.5,
    }
    return McpServerSettings(**(fields | overrides))


def test_http_tools_run_send_headers_and_time_out(http_server: HttpServer) -> None:
    settings = http_settings(http_server)
    assert "s3cret" not in repr(settings)
    with started(settings) as h:
        assert set(h.registry.names()) == {tool_name("web", t) for t in SERVER_TOOLS}
        assert h.call("web_add", {"a": 3, "b": 4}).output == "7"
        assert h.call("web_header", {"name": "Authorization"}).output == "Bearer s3cret"
        assert h.call("web_meta_echo", step="s2").output == "t-1:s2:1"
        assert h.call("web_add", {"a": 1}).code == "bad_arguments"
        assert h.call("web_explode", {"reason": "no"}).code == "failed"
        assert h.call("web_slow", {"seconds": 5}).code == "timeout"
        assert h.call("web_add", {"a": 1, "b": 1}).output == "2"


def test_an_http_server_killed_mid_session_fails_then_reconnects(
    http_server: HttpServer,
) -> None:
    with started(http_settings(http_server, tools=("add",), timeout_s=20.0)) as h:
        assert h.call("web_add", {"a": 1, "b": 2}).ok
        http_server.kill()
        down = h.call("web_add", {"a": 1, "b": 2})
        assert (down.ok, down.code) == (False, "failed")
        assert "'web'" in (down.error or "")
        assert not h.call("web_add", {"a": 1, "b": 2}).ok
        http_server.start()
        back = h.call("web_add", {"a": 1, "b": 2})
        assert (back.ok, back.output) == (True, "3"), back.error


# --- settings and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "fix"),
    [
        ({"name": "x", "transport": "stdio"}, "needs `command`"),
        ({"name": "x", "transport": "http"}, "needs `url`"),
        ({"name": "x", "transport": "http", "url": "ftp://h/mcp"}, "http:// or https://"),
        ({"name": "x", "transport": "http", "url": "http://h/mcp", "command": "c"}, "stdio"),
        ({"name": "x", "transport": "stdio", "command": "c", "url": "http://h"}, "'http'"),
        ({"name": "9x", "transport": "stdio", "command": "c"}, "start with a letter"),
        (
            {
                "name": "x",
                "transport": "stdio",
                "command": "c",
                "tools": ("a",),
                "high_impact": ("b",),
            },
            "not expose",
        ),
        ({"name": "x", "transport": "stdio", "command": "c", "timeout_s": 0}, "greater than 0"),
        ({"name": "x", "transport": "stdio", "command": "c", "tolls": ("a",)}, "tolls"),
    ],
)
def test_settings_errors_say_what_to_fix(fields: dict[str, Any], fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        McpServerSettings(**fields)
    assert fix in str(info.value)


def test_server_names_must_be_unique() -> None:
    one = McpServerSettings(name="a", transport="stdio", command="c")
    with pytest.raises(ValidationError, match="twice"):
        McpSettings(servers=(one, one))


def test_tool_names_are_fitted_to_the_registry_pattern() -> None:
    assert tool_name("fs", "read.file") == "fs_read_file"
    long_a, long_b = tool_name("s", "x" * 80 + "a"), tool_name("s", "x" * 80 + "b")
    assert len(long_a) == 64
    assert long_a != long_b


SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "query": {"type": "string", "minLength": 1, "description": "What to find."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "mode": {"enum": ["fast", "exact"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "near": {"$ref": "#/$defs/Point"},
        "cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "from": {"type": "boolean"},
        "extra": {"allOf": [{"type": "string"}, {"minLength": 2}]},
    },
    "required": ["query"],
}


def test_args_models_follow_the_input_schema() -> None:
    model = args_model_from_schema(SCHEMA, name="t_search")
    ok = model.model_validate(
        {"query": "q", "mode": "exact", "near": {"x": 1, "y": 2.5}, "from": True, "extra": [1]}
    )
    sent = ok.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert sent == {
        "query": "q",
        "mode": "exact",
        "near": {"x": 1.0, "y": 2.5},
        "from": True,  # a Python keyword as a property name still goes out as named
        "extra": [1],  # several allOf members: any JSON value
    }
    assert model.model_validate({"query": "q"}).model_dump(by_alias=True)["limit"] == 10
    bad = [
        ({"query": ""}, "query"),
        ({"query": "q", "limit": 51}, "limit"),
        ({"query": "q", "mode": "slow"}, "mode"),
        ({"query": "q", "tags": ["a", "b", "c", "d"]}, "tags"),
        ({"query": "q", "tags": [1]}, "tags.0"),
        ({"query": "q", "near": {"x": 1}}, "near.y"),
        ({"query": "q", "near": {"x": 1, "y": 2, "z": 3}}, "near.z"),
        ({"query": "q", "cursor": 5}, "cursor"),
        ({"query": "q", "unknown": 1}, "unknown"),
    ]
    for arguments, field in bad:
        with pytest.raises(ValidationError) as info:
            model.model_validate(arguments)
        locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
        assert any(loc.startswith(field) for loc in locs), (arguments, locs)


def test_a_recursive_schema_is_cut_where_it_refers_to_itself() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "left": {"$ref": "#/$defs/Node"},
            "right": {"$ref": "#/$defs/Node"},
        },
        "required": ["name"],
    }
    schema = {
        "type": "object",
        "$defs": {"Node": node},
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "required": ["root"],
    }
    model = args_model_from_schema(schema, name="t_tree")
    tree = {"root": {"name": "a", "left": {"name": "b", "right": {"name": "c"}}}}
    assert model.model_validate(tree).model_dump(by_alias=True, exclude_unset=True) == tree
    with pytest.raises(ValidationError, match=r"root\.name"):
        model.model_validate({"root": {"left": {}}})
