"""A small real MCP server for the MCP toolset tests.

Run it over stdio (``python -m tests.agents.mcp_server``) or streamable HTTP
(``python -m tests.agents.mcp_server --http PORT``, endpoint ``/mcp``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("troupe-test", log_level="WARNING")
_add_calls = 0


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    global _add_calls
    _add_calls += 1
    return str(a + b)


@server.tool()
def add_calls() -> str:
    """How often ``add`` ran in this process."""
    return str(_add_calls)


@server.tool()
def shout(text: str, punctuation: Literal["!", "?"] = "!") -> str:
    """Upper-case some text."""
    return text.upper() + punctuation


@server.tool()
def explode(reason: str) -> str:
    """Always fails with the given reason."""
    raise ToolError(f"exploded: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool(name="meta.echo")
def meta_echo(ctx: Context) -> str:
    """The idempotency key the caller sent in the request ``_meta``."""
    meta = ctx.request_context.meta or {}
    return str(meta.get("idempotency_key", "none"))


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of an HTTP request header ("none" over stdio or when absent)."""
    headers = ctx.headers or {}
    return str(headers.get(name.lower(), "none"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on PORT")
    port = parser.parse_args().http
    if port is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
