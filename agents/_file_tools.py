"""``read_file``, ``write_file`` and ``list_files``: confined to the task workspace.

Paths are relative to the workspace. Absolute paths and ``..`` are refused up front, and every
path is opened one component at a time relative to the workspace's directory descriptor with
``O_NOFOLLOW``, so no symbolic link is ever followed: a link planted by sandboxed code (which
may write the workspace) cannot lead these tools, which run with troupe's own rights, outside
it, not even by swapping a directory for a link between a check and the open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field

from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from protocols import AgentError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LIST = 500


def workspace_parts(path: str) -> tuple[str, ...]:
    """The components of a workspace-relative path (empty for the workspace itself).

    Raises:
        AgentError: For absolute paths, ``..``, ``~`` and NUL bytes, saying what to send.
    """
    if "\x00" in path:
        raise AgentError("the path contains a NUL byte", code="bad_input")
    pure = PurePosixPath(path.strip() or ".")
    if pure.is_absolute() or path.startswith("~"):
        raise AgentError(
            f"{path!r} is absolute; use a path relative to the task workspace, e.g. 'notes.txt'",
            code="bad_input",
        )
    if ".." in pure.parts:
        raise AgentError(f"{path!r} leaves the task workspace ('..' is refused)", code="bad_input")
    return tuple(p for p in pure.parts if p != ".")


@contextlib.contextmanager
def _directory(ctx: ToolContext, parts: tuple[str, ...], *, create: bool = False) -> Iterator[int]:
    """A descriptor of the workspace directory ``parts``, reached without following links."""
    fd = os.open(ctx.workspace, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise AgentError(_why(part, exc), code="bad_input") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _why(name: str, exc: OSError) -> str:
    if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
        return f"{name!r} is a symbolic link or not a directory; file tools do not follow links"
    if exc.errno == errno.ENOENT:
        return f"{name!r} does not exist in the task workspace"
    return f"{name!r}: {exc.strerror}"


class ReadFileArgs(ToolArgs):
    """Arguments of ``read_file``."""

    path: str = Field(min_length=1, max_length=500, description="Path inside the workspace.")
    max_chars: int = Field(default=20_000, ge=1, le=100_000, description="Characters to return.")


class ReadFileTool(TypedTool[ReadFileArgs]):
    """Reads a text file of the task workspace."""

    name = "read_file"
    description = "Read a text file from the task workspace (path relative to it)."
    args_model = ReadFileArgs
    timeout_s = 10.0

    async def run(self, args: ReadFileArgs, ctx: ToolContext) -> ToolResult:
        """Returns the file's text, cut at ``max_chars``."""
        parts = workspace_parts(args.path)
        if not parts:
            return self.fail("give a file path, not the workspace itself", code="bad_arguments")
        with _directory(ctx, parts[:-1]) as parent:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                return self.fail(_why(args.path, exc), code="bad_arguments")
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return self.fail(f"{args.path!r} is not a regular file", code="bad_arguments")
                data = handle.read(args.max_chars * 4 + 4)
        text = data.decode(errors="replace")
        return self.result(text[: args.max_chars], truncated=len(text) > args.max_chars)


class WriteFileArgs(ToolArgs):
    """Arguments of ``write_file``."""

    path: str = Field(min_length=1, max_length=500, description="Path inside the workspace.")
    content: str = Field(max_length=1_000_000, description="Text to write (UTF-8).")
    mode: Literal["overwrite", "append", "create"] = Field(
        default="overwrite", description="create: fail if the file exists."
    )


class WriteFileTool(TypedTool[WriteFileArgs]):
    """Writes a text file in the task workspace, creating parent directories."""

    name = "write_file"
    description = "Write a text file in the task workspace (path relative to it)."
    args_model = WriteFileArgs
    timeout_s = 10.0

    async def run(self, args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
        """Writes the content; says how many bytes."""
        parts = workspace_parts(args.path)
        if not parts:
            return self.fail("give a file path, not the workspace itself", code="bad_arguments")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= {"overwrite": os.O_TRUNC, "append": os.O_APPEND, "create": os.O_EXCL}[args.mode]
        data = args.content.encode()
        with _directory(ctx, parts[:-1], create=True) as parent:
            try:
                fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
            except OSError as exc:
                return self.fail(_why(args.path, exc), code="bad_arguments")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return self.result(f"wrote {len(data)} bytes to {'/'.join(parts)}")


class ListFilesArgs(ToolArgs):
    """Arguments of ``list_files``."""

    path: str = Field(default=".", max_length=500, description="Directory inside the workspace.")
    recursive: bool = Field(default=False, description="List subdirectories too.")


class ListFilesTool(TypedTool[ListFilesArgs]):
    """Lists a directory of the task workspace (directories end in ``/``)."""

    name = "list_files"
    description = "List files in the task workspace (directories end with '/')."
    args_model = ListFilesArgs
    timeout_s = 10.0

    async def run(self, args: ListFilesArgs, ctx: ToolContext) -> ToolResult:
        """One path per line, sorted, at most 500."""
        with _directory(ctx, workspace_parts(args.path)) as fd:
            names = sorted(_entries(fd, recursive=args.recursive))
        shown = names[:_MAX_LIST]
        return self.result("\n".join(shown) or "(empty)", truncated=len(names) > len(shown))


def _entries(fd: int, *, recursive: bool) -> Iterator[str]:
    # fwalk works on descriptors and never follows links.
    for root, dirs, files, _ in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        prefix = "" if root == "." else root[2:] + "/"
        yield from (f"{prefix}{d}/" for d in dirs)
        yield from (f"{prefix}{f}" for f in files)
        if not recursive:
            return
