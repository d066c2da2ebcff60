"""File tools stay in the task workspace; http_get is off by default and allow-listed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents._builtin_tools import HttpGetSettings, HttpGetTool, MemorySearchTool
from agents._file_tools import ListFilesTool, ReadFileTool, WriteFileTool
from agents._toolkit import ToolContext, ToolPolicy, ToolRegistry, ToolResult
from memory import EmbeddedStore, Episode, LocalMemory

FILES = ToolRegistry([ReadFileTool(), WriteFileTool(), ListFilesTool()])
POLICY = ToolPolicy(FILES.names())


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    return ToolContext(task_id="t1", step_id="s1", workspace=workspace)


def _call(name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return asyncio.run(FILES.call(name, arguments, ctx, policy=POLICY))


def test_write_read_and_list_inside_the_workspace(ctx: ToolContext) -> None:
    wrote = _call("write_file", {"path": "notes/a.txt", "content": "héllo"}, ctx)
    assert wrote.ok and wrote.output == "wrote 6 bytes to notes/a.txt"
    _call("write_file", {"path": "notes/a.txt", "content": "!", "mode": "append"}, ctx)
    assert _call("read_file", {"path": "./notes/a.txt"}, ctx).output == "héllo!"
    again = _call("write_file", {"path": "notes/a.txt", "content": "x", "mode": "create"}, ctx)
    assert not again.ok
    cut = _call("read_file", {"path": "notes/a.txt", "max_chars": 2}, ctx)
    assert cut.output == "hé" and cut.truncated
    assert _call("list_files", {}, ctx).output == "notes/"
    assert _call("list_files", {"recursive": True}, ctx).output == "notes/\nnotes/a.txt"


@pytest.mark.parametrize(
    ("tool", "path", "fragment"),
    [
        ("read_file", "/etc/passwd", "is absolute; use a path relative to the task workspace"),
        ("read_file", "../secret.txt", "leaves the task workspace"),
        ("read_file", "a/../../secret.txt", "leaves the task workspace"),
        ("write_file", "../evil.txt", "leaves the task workspace"),
        ("write_file", "~/evil.txt", "is absolute"),
        ("list_files", "..", "leaves the task workspace"),
        ("read_file", "missing.txt", "does not exist"),
    ],
)
def test_paths_that_leave_the_workspace_are_refused(
    ctx: ToolContext, tool: str, path: str, fragment: str
) -> None:
    arguments: dict[str, Any] = {"path": path}
    if tool == "write_file":
        arguments["content"] = "x"
    result = _call(tool, arguments, ctx)
    assert not result.ok and fragment in str(result.error)
    assert not (ctx.workspace.parent / "evil.txt").exists()


def test_symlinks_are_never_followed(ctx: ToolContext) -> None:
    outside = ctx.workspace.parent
    (ctx.workspace / "link.txt").symlink_to(outside / "secret.txt")
    (ctx.workspace / "linkdir").symlink_to(outside)
    read = _call("read_file", {"path": "link.txt"}, ctx)
    assert not read.ok and "symbolic link" in str(read.error)
    assert not _call("read_file", {"path": "linkdir/secret.txt"}, ctx).ok
    write = _call("write_file", {"path": "linkdir/evil.txt", "content": "x"}, ctx)
    assert not write.ok and not (outside / "evil.txt").exists()
    clobber = _call("write_file", {"path": "link.txt", "content": "x"}, ctx)
    assert not clobber.ok and (outside / "secret.txt").read_text() == "outside"
    assert not _call("list_files", {"path": "linkdir"}, ctx).ok


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://example.com/")
            self.end_headers()
            return
        body = b"hello from " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(settings: HttpGetSettings, url: str, ctx: ToolContext) -> ToolResult:
    registry = ToolRegistry([HttpGetTool(settings)])
    return asyncio.run(
        registry.call("http_get", {"url": url}, ctx, policy=ToolPolicy({"http_get"}))
    )


def test_http_get_is_off_by_default(server: int, ctx: ToolContext) -> None:
    result = _get(HttpGetSettings(allowed_hosts=("127.0.0.1",)), f"http://127.0.0.1:{server}/", ctx)
    assert result.code == "disabled"


def test_http_get_fetches_only_from_allowed_hosts(server: int, ctx: ToolContext) -> None:
    on = HttpGetSettings(enabled=True, allowed_hosts=(f"127.0.0.1:{server}",))
    ok = _get(on, f"http://127.0.0.1:{server}/page", ctx)
    assert ok.ok and ok.output == "HTTP 200\nhello from /page"
    for url, fragment in [
        (f"http://localhost:{server}/", "host 'localhost' is not allow-listed"),
        ("http://127.0.0.1:1/", "host '127.0.0.1' is not allow-listed"),  # other port
        ("file:///etc/passwd", "only http and https"),
    ]:
        refused = _get(on, url, ctx)
        assert refused.code == "not_allowed" and fragment in str(refused.error)
    moved = _get(on, f"http://127.0.0.1:{server}/moved", ctx)
    assert not moved.ok and "redirect to http://example.com/ not followed" in str(moved.error)


def test_memory_search_recalls_from_the_tasks_namespace(ctx: ToolContext) -> None:
    memory = LocalMemory(EmbeddedStore(None))
    episode = Episode.create(kind="observation", content="the invoice total was 420 EUR", agent="a")
    asyncio.run(memory.remember([episode]))
    registry = ToolRegistry([MemorySearchTool(memory)])
    policy = ToolPolicy({"memory_search"})
    found = asyncio.run(
        registry.call("memory_search", {"query": "invoice total"}, ctx, policy=policy)
    )
    assert found.ok and found.output == "- [observation, from agent] the invoice total was 420 EUR"
    other = ctx.model_copy(update={"namespace": "other"})
    none = asyncio.run(registry.call("memory_search", {"query": "invoice"}, other, policy=policy))
    assert none.output == "(nothing found)"
