"""The python tool's sandbox: no network, limits, an unprivileged uid, empty env, workspace only."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents._builtin_tools import PythonTool
from agents._sandbox import (
    WORKSPACE_MOUNT,
    Sandbox,
    SandboxResult,
    SandboxSettings,
    missing_tools,
    sandbox_uid,
)
from agents._toolkit import ToolContext, ToolPolicy, ToolRegistry


def _sandbox_works() -> str | None:
    if missing_tools():
        return f"missing {missing_tools()}"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    return None if probe.returncode == 0 else "unshare is not permitted here"


pytestmark = pytest.mark.skipif(_sandbox_works() is not None, reason=str(_sandbox_works()))

SETTINGS = SandboxSettings(timeout_s=2, memory_mb=192, max_processes=12, max_file_mb=1, cpu_s=5)


def _run(code: str, workspace: Path, settings: SandboxSettings = SETTINGS) -> SandboxResult:
    return asyncio.run(Sandbox(settings).run_python(code, workspace=workspace))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "task-1"
    path.mkdir()
    return path


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            line = next(x for x in status.splitlines() if x.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                pids.append(int(entry.name))
    return pids


def test_network_is_refused_inside(workspace: Path, listener: int) -> None:
    # the listener is reachable from out here ...
    socket.create_connection(("127.0.0.1", listener), timeout=2).close()
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {listener}), timeout=2)
    print("connected")
except OSError as exc:
    print("refused", exc.errno)
"""
    # ... and not from in there (a fresh network namespace: no interface is up)
    run = _run(code, workspace)
    assert run.ok, run.stderr
    assert run.stdout.startswith("refused")


def test_runs_as_an_unprivileged_uid_in_the_workspace_with_an_empty_env(workspace: Path) -> None:
    (workspace / "given.txt").write_text("from the host")
    code = """
import os
print(os.getuid(), os.getgid(), os.getgroups())
print(os.getcwd())
print(open("given.txt").read())
open("made.txt", "w").write("by the code")
print(sorted(os.environ))
"""
    run = _run(code, workspace)
    assert run.ok, run.stderr
    uid, cwd, given, env = run.stdout.splitlines()
    expected = sandbox_uid(workspace, SETTINGS)
    assert uid == f"{expected} {expected} []" and expected != 0
    assert cwd == WORKSPACE_MOUNT and given == "from the host"
    assert (workspace / "made.txt").read_text() == "by the code"
    # Python's own locale coercion adds LC_CTYPE; the process gets PATH only (next check)
    assert set(eval(env)) <= {"PATH", "LC_CTYPE"}
    bare = asyncio.run(Sandbox(SETTINGS).run(["env"], workspace=workspace))
    assert bare.stdout == f"PATH={SETTINGS.path}\n"


def test_writes_outside_the_workspace_are_refused(workspace: Path) -> None:
    outside = [
        "/tmp/escape.txt",
        str(workspace.parent / "sibling.txt"),  # the workspace's real location on the host
        str(Path(__file__).resolve().parent / "escape.txt"),
        "/dev/shm/escape",
        "/var/tmp/escape",
    ]
    code = f"""
for path in {outside!r}:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("refused", exc.errno)
"""
    run = _run(code, workspace)
    assert run.ok, run.stderr
    assert "WROTE" not in run.stdout and run.stdout.count("refused") == len(outside)
    assert not any(Path(p).exists() for p in outside)


def test_memory_limit_is_hit(workspace: Path) -> None:
    run = _run("block = bytearray(512 * 1024 * 1024)\nprint('allocated')", workspace)
    assert not run.ok and "MemoryError" in run.stderr and "allocated" not in run.stdout


def test_file_size_limit_is_hit(workspace: Path) -> None:
    run = _run("open('big', 'wb').write(b'x' * (3 * 1024 * 1024))", workspace)
    assert not run.ok and "File too large" in run.stderr
    assert (workspace / "big").stat().st_size <= 1024 * 1024


def test_process_limit_contains_a_fork_bomb(workspace: Path) -> None:
    code = """
import os, time
children = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
print(children, flush=True)
while True:  # and now a real bomb, until the wall clock runs out
    try:
        os.fork()
    except OSError:
        pass
"""
    run = _run(code, workspace, SETTINGS.model_copy(update={"timeout_s": 1.5}))
    assert run.timed_out and not run.ok
    assert int(run.stdout.split()[0]) < SETTINGS.max_processes
    assert _uid_processes(sandbox_uid(workspace, SETTINGS)) == []  # every last one is gone


def test_timeout_kills_the_tree_even_after_setsid(workspace: Path) -> None:
    code = """
import os, subprocess, time
subprocess.Popen(["sleep", "60"], start_new_session=True)
os.setsid()
time.sleep(60)
"""
    run = _run(code, workspace, SETTINGS.model_copy(update={"timeout_s": 1}))
    assert run.timed_out and run.duration_s < 10
    assert _uid_processes(sandbox_uid(workspace, SETTINGS)) == []


def test_output_is_truncated(workspace: Path) -> None:
    settings = SETTINGS.model_copy(update={"max_output_chars": 100})
    run = _run("print('y' * 100000)", workspace, settings)
    assert run.ok and run.truncated and run.stdout == "y" * 100


def test_python_tool_reports_failures_briefly(workspace: Path) -> None:
    registry = ToolRegistry([PythonTool(SETTINGS)])
    ctx = ToolContext(task_id="t", step_id="s", workspace=workspace)
    policy = ToolPolicy({"python"})

    def call(code: str):  # type: ignore[no-untyped-def]
        return asyncio.run(registry.call("python", {"code": code}, ctx, policy=policy))

    good = call("print(6 * 7)")
    assert good.ok and good.output == "42\n"
    bad = call("raise ValueError('nope')")
    assert not bad.ok and bad.error == "exit status 1: ValueError: nope"
    assert "Traceback" in bad.output  # the code's own traceback is its output, for the model
    slow = call("while True: pass")
    assert slow.code == "timeout" and "time limit" in str(slow.error)


def test_runs_inside_a_threaded_process(workspace: Path) -> None:
    # Ray workers are threaded; the sandbox runs no Python between fork and exec.
    import threading

    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert _run("print('ok')", workspace).stdout == "ok\n"
    finally:
        stop.set()
