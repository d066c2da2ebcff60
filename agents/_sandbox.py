"""A sandboxed subprocess for untrusted code: no network, resource limits, its own uid.

Built from util-linux tools, each exec'ing the next, so nothing runs Python code between
``fork`` and ``exec`` (``preexec_fn`` is unsafe in threaded processes such as Ray workers):

``unshare --net --mount --pid --fork --kill-child --mount-proc``
    New network namespace (only a downed loopback: no network at all), a private mount
    table and a pid namespace. The sandboxed program is pid 1 there: when it dies, the
    kernel kills everything it started, fork bombs included.
``sh -c _SETUP``
    In the private mount table: ``/`` read-only, an empty read-only tmpfs over ``/tmp`` and
    ``/dev/shm``, and the task workspace bind-mounted writable at ``/tmp/workspace`` (the
    only writable place; it is also the working directory).
``env -i PATH=...``
    An empty environment but for a minimal ``PATH``.
``prlimit``
    Address space, CPU seconds, processes (per uid), file size, open files, no core dumps.
``setpriv``
    An unprivileged uid/gid with no supplementary groups, no capabilities, no new privileges.

Running as root drops to ``settings.uid`` (by default a fresh uid derived from the workspace,
so concurrent tasks neither share a process limit nor each other's files). Not root: a user
namespace maps the caller to root inside it (``--map-root-user``); the code then runs as the
caller's own unprivileged uid outside, and ``setpriv`` only drops capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocols import ConfigurationError

WORKSPACE_MOUNT = "/tmp/workspace"
"""Where the task workspace appears inside the sandbox (its working directory)."""

_REQUIRED = ("unshare", "prlimit", "setpriv", "env", "sh", "mount")

# Runs as (namespace) root inside the new mount namespace, then execs the rest of argv.
# $1 is the workspace on the host; it is entered before /tmp is covered so that a workspace
# under /tmp stays reachable (bind-mounting "." without canonicalising the path).
_SETUP = f"""set -e
cd -- "$1"; shift
mount -t tmpfs -o size=16k,mode=0755,nosuid,nodev tmpfs /tmp
mkdir {WORKSPACE_MOUNT}
mount --no-canonicalize --bind . {WORKSPACE_MOUNT}
mount -o remount,bind,ro /
mount -o remount,bind,ro,nosuid,nodev /tmp
mount -o remount,bind,rw,nosuid,nodev {WORKSPACE_MOUNT}
if [ -d /dev/shm ]; then mount -t tmpfs -o ro,size=4k,nosuid,nodev tmpfs /dev/shm; fi
cd {WORKSPACE_MOUNT}
exec "$@"
"""


class SandboxSettings(BaseModel):
    """Limits of one sandboxed run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Wall clock; then the whole process tree dies."
    )
    memory_mb: int = Field(default=512, ge=32, description="Address-space limit per process.")
    cpu_s: int = Field(default=10, ge=1, description="CPU seconds per process (RLIMIT_CPU).")
    max_processes: int = Field(
        default=32, ge=1, description="Processes and threads of the sandbox uid (RLIMIT_NPROC)."
    )
    max_file_mb: int = Field(default=16, ge=1, description="Largest file it may write.")
    max_open_files: int = Field(default=64, ge=8, description="Open file descriptors.")
    max_output_chars: int = Field(
        default=8000, ge=64, description="Characters of stdout and of stderr kept (each)."
    )
    uid: int | None = Field(
        default=None,
        ge=1,
        description="Uid/gid to run as when troupe runs as root; None derives a fresh one "
        "per workspace from the 200000-299999 range.",
    )
    path: str = Field(
        default="/usr/local/bin:/usr/bin:/bin", description="The only environment variable."
    )
    python: str | None = Field(
        default=None,
        description="Interpreter for Python code; None is this process's, its real path (a venv "
        "under /tmp would be hidden: /tmp is covered inside the sandbox).",
    )


class SandboxResult(BaseModel):
    """What a sandboxed run did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit_code: int | None = Field(description="Exit status; negative: killed by that signal.")
    stdout: str = Field(default="", description="Standard output, truncated to the limit.")
    stderr: str = Field(default="", description="Standard error, truncated to the limit.")
    timed_out: bool = Field(default=False, description="Killed at the wall-clock timeout.")
    truncated: bool = Field(default=False, description="Some output was dropped.")
    duration_s: float = Field(default=0.0, ge=0, description="Wall-clock seconds.")

    @property
    def ok(self) -> bool:
        """Exited with status 0 in time."""
        return self.exit_code == 0 and not self.timed_out


def sandbox_uid(workspace: Path, settings: SandboxSettings) -> int:
    """The uid a workspace's code runs as (when troupe is root)."""
    if settings.uid is not None:
        return settings.uid
    return 200_000 + zlib.crc32(str(workspace.resolve()).encode()) % 100_000


def missing_tools() -> list[str]:
    """The util-linux/coreutils programs the sandbox needs that are not on ``PATH``."""
    return [name for name in _REQUIRED if shutil.which(name) is None]


def sandbox_command(
    argv: Sequence[str], *, workspace: Path, settings: SandboxSettings, as_root: bool
) -> list[str]:
    """The full command line that runs ``argv`` sandboxed in ``workspace``.

    Args:
        argv: The program and its arguments, as seen inside the sandbox.
        workspace: The task workspace on this machine (must exist).
        settings: The limits.
        as_root: Whether the caller is root (drop to a uid) or not (use a user namespace).
    """
    unshare = ["unshare", "--net", "--mount", "--propagation", "private"]
    unshare += ["--pid", "--fork", "--kill-child", "--mount-proc"]
    if not as_root:
        unshare.append("--map-root-user")
    limits = [
        "prlimit",
        f"--as={settings.memory_mb * 1024 * 1024}",
        f"--cpu={settings.cpu_s}",
        f"--nproc={settings.max_processes}",
        f"--fsize={settings.max_file_mb * 1024 * 1024}",
        f"--nofile={settings.max_open_files}",
        "--core=0",
        "--",
    ]
    drop = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    if as_root:
        uid = str(sandbox_uid(workspace, settings))
        drop += ["--reuid", uid, "--regid", uid, "--clear-groups"]
    return [
        *unshare,
        "--",
        "sh",
        "-c",
        _SETUP,
        "troupe-sandbox",
        str(workspace),
        "env",
        "-i",
        f"PATH={settings.path}",
        *limits,
        *drop,
        "--",
        *argv,
    ]


class Sandbox:
    """Runs programs in the sandbox described in this module's docstring.

    Args:
        settings: The limits of every run.
    """

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()

    async def run_python(self, code: str, *, workspace: Path) -> SandboxResult:
        """Runs Python source (given on stdin, isolated mode) in ``workspace``."""
        python = self.settings.python or os.path.realpath(sys.executable)
        if Path(python).is_relative_to("/tmp") or Path(python).is_relative_to("/dev/shm"):
            raise ConfigurationError(
                f"the sandbox covers /tmp and /dev/shm, so {python} cannot run inside it: set "
                "the sandbox's python to an interpreter installed elsewhere"
            )
        return await self.run([python, "-I", "-X", "utf8", "-"], workspace=workspace, stdin=code)

    async def run(self, argv: Sequence[str], *, workspace: Path, stdin: str = "") -> SandboxResult:
        """Runs ``argv`` in ``workspace``; the workspace becomes owned by the sandbox uid.

        Raises:
            ConfigurationError: When a required program is missing or the workspace is not a
                directory.
        """
        missing = missing_tools()
        if missing:
            raise ConfigurationError(
                f"the sandbox needs util-linux programs that are not installed: {missing}"
            )
        if not workspace.is_dir():
            raise ConfigurationError(f"task workspace {workspace} is not a directory")
        as_root = os.geteuid() == 0
        if as_root:
            await asyncio.to_thread(_hand_over, workspace, sandbox_uid(workspace, self.settings))
        command = sandbox_command(
            argv, workspace=workspace, settings=self.settings, as_root=as_root
        )
        return await self._spawn(command, stdin)

    async def _spawn(self, command: list[str], stdin: str) -> SandboxResult:
        started = time.monotonic()
        # start_new_session is done by the C fork/exec path (setsid), not by Python code.
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": self.settings.path},
            start_new_session=True,
        )
        limit = self.settings.max_output_chars
        assert proc.stdout is not None and proc.stderr is not None
        reads = asyncio.gather(
            _feed(proc, stdin), _read(proc.stdout, limit), _read(proc.stderr, limit)
        )
        timed_out = False
        try:
            _, out, err = await asyncio.wait_for(
                asyncio.shield(reads), timeout=self.settings.timeout_s
            )
            await proc.wait()
        except TimeoutError:
            timed_out = True
            await _kill_tree(proc)
            await proc.wait()
            _, out, err = await reads
        return SandboxResult(
            exit_code=proc.returncode,
            stdout=out[0],
            # unshare complains when its child is killed under it; that is our doing, not news.
            stderr=_drop_unshare_noise(err[0]) if timed_out else err[0],
            timed_out=timed_out,
            truncated=out[1] or err[1],
            duration_s=time.monotonic() - started,
        )


async def _feed(proc: asyncio.subprocess.Process, text: str) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(text.encode())
        await proc.stdin.drain()
    proc.stdin.close()


async def _read(stream: asyncio.StreamReader, limit: int) -> tuple[str, bool]:
    """Keeps the first ``limit`` bytes, drains the rest (so the child never blocks on a pipe)."""
    kept = bytearray()
    dropped = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        kept += chunk[: max(room, 0)]
        dropped = dropped or len(chunk) > room
    return kept.decode(errors="replace"), dropped


async def _kill_tree(proc: asyncio.subprocess.Process) -> None:
    """Kills the sandbox's pid 1, lets ``unshare`` reap it, then kills the process group.

    Killing pid 1 directly matters: the code may have left our process group (``setsid``),
    and ``--kill-child`` does not survive ``setpriv``'s change of uid. When pid 1 of a pid
    namespace exits, the kernel kills every other process in it and waits for them before pid
    1 can be reaped, so once ``unshare`` has exited nothing of the run is left.
    """
    for child in _children(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=2.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _drop_unshare_noise(text: str) -> str:
    return "".join(x for x in text.splitlines(keepends=True) if not x.startswith("unshare: "))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _hand_over(workspace: Path, uid: int) -> None:
    """Makes the workspace the sandbox uid's own (mode 0700), without following symlinks."""
    os.chown(workspace, uid, uid)
    workspace.chmod(0o700)
    for root, dirs, files in os.walk(workspace):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), uid, uid)
