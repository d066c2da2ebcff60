"""Direct lanes between actors on one node: what they carry, and what they refuse."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from protocols import LaneBroken, LaneRemoteError, LaneUnavailable, lane_call
from tests.protocols.lane_actors import AsyncTarget, ThreadedTarget

pytestmark = pytest.mark.ray


@pytest.fixture
def target(ray_session: None) -> Iterator[Any]:
    import ray

    actor = ray.remote(AsyncTarget).options(num_cpus=0).remote()
    yield actor
    ray.kill(actor, no_restart=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_call_goes_over_the_lane_and_comes_back_whole(target: Any) -> None:
    import ray

    value = {"text": "x" * 5000, "items": list(range(100)), "nested": ("a", None, 1.5)}
    assert run(lane_call(target, "echo", value)) == value
    assert run(lane_call(target, "echo", b"\x00" * 10)) == b"\x00" * 10
    assert ray.get(target.counts.remote())[0] == 2  # answered over the lane, not through Ray


def test_many_calls_in_flight_on_one_lane_each_get_their_own_reply(target: Any) -> None:
    async def many() -> list[Any]:
        return await asyncio.gather(*(lane_call(target, "echo", i) for i in range(50)))

    assert run(many()) == list(range(50))


def test_a_result_only_cloudpickle_carries_still_comes_back(target: Any) -> None:
    add = run(lane_call(target, "local_function", 40))
    assert add(2) == 42  # type: ignore[operator]


def test_the_methods_error_comes_back_as_its_cause(target: Any) -> None:
    with pytest.raises(LaneRemoteError) as caught:
        run(lane_call(target, "fail", "the input was bad"))
    assert isinstance(caught.value.cause, ValueError)
    assert str(caught.value.cause) == "the input was bad"


def test_an_error_that_cannot_be_rebuilt_still_says_what_it_was(target: Any) -> None:
    with pytest.raises(LaneRemoteError) as caught:
        run(lane_call(target, "odd_failure"))
    assert isinstance(caught.value.cause, RuntimeError)
    assert "Unpicklable: first" in str(caught.value.cause)


def test_a_method_not_served_is_unavailable_and_not_run(target: Any) -> None:
    import ray

    with pytest.raises(LaneUnavailable, match="not_served"):
        run(lane_call(target, "not_served"))
    assert ray.get(target.counts.remote())[0] == 0
    assert ray.get(target.not_served.remote()) == "ran"  # through Ray it is there


def test_an_argument_pickle_cannot_carry_is_unavailable(target: Any) -> None:
    with pytest.raises(LaneUnavailable, match="not picklable"):
        run(lane_call(target, "echo", lambda: None))


def test_an_actor_without_a_lane_is_unavailable(ray_session: None) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Plain:
        def echo(self, value: object) -> object:
            return value

    plain = Plain.remote()  # type: ignore[attr-defined]
    try:
        with pytest.raises(LaneUnavailable):
            run(lane_call(plain, "echo", 1))
        with pytest.raises(LaneUnavailable):
            run(lane_call(object(), "echo", 1))  # not an actor handle at all
    finally:
        ray.kill(plain, no_restart=True)


def test_a_timeout_cancels_the_call_on_the_actor(target: Any) -> None:
    import ray

    async def timed_out() -> None:
        await lane_call(target, "wait", 30.0, timeout=0.2)

    with pytest.raises(TimeoutError):
        run(timed_out())
    deadline = time.monotonic() + 10
    while ray.get(target.counts.remote())[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.get(target.counts.remote())[1] == 1


def test_a_call_in_flight_when_the_actor_dies_is_broken(target: Any) -> None:
    import ray

    async def killed_mid_call() -> None:
        call = asyncio.ensure_future(lane_call(target, "wait", 30.0))
        await asyncio.sleep(0.5)
        ray.kill(target, no_restart=True)
        await asyncio.wait_for(call, 20)

    with pytest.raises(LaneBroken):
        run(killed_mid_call())


def test_after_a_restart_the_next_call_finds_the_new_process_lane(ray_session: None) -> None:
    import ray

    actor = ray.remote(AsyncTarget).options(num_cpus=0, max_restarts=1).remote()

    async def across_a_restart() -> tuple[int, int, int]:
        before = await lane_call(actor, "pid")
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the new process answers through Ray
            try:
                if await actor.pid.remote() != before:
                    break
            except ray.exceptions.RayActorError:
                pass
            await asyncio.sleep(0.1)
        after = await lane_call(actor, "pid")  # same event loop: its old connection is closed
        return int(before), int(after), int((await actor.counts.remote())[0])  # type: ignore[arg-type]

    try:
        before, after, served_by_new = run(across_a_restart())
        assert after != before
        assert served_by_new == 1
    finally:
        ray.kill(actor, no_restart=True)


def test_a_threaded_actor_serves_its_lane_from_a_thread_of_its_own(ray_session: None) -> None:
    import ray

    actor = ray.remote(ThreadedTarget).options(num_cpus=0).remote()
    try:
        assert run(lane_call(actor, "where")) == "troupe-lane"
        assert ray.get(actor.where.remote()) != "troupe-lane"  # Ray's calls run elsewhere
        assert ray.get(actor.served.remote()) == 1
    finally:
        ray.kill(actor, no_restart=True)


_OTHER_USER = """
import socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect("\\0" + sys.argv[1])
body = b"not even a pickle"
sock.settimeout(10)
try:  # the server may close before, or while, this is sent
    sock.sendall(struct.pack("!IQB", len(body), 1, 0) + body)
    print(repr(sock.recv(100)))
except (BrokenPipeError, ConnectionResetError):
    print(repr(b""))
"""


# The system's Python: this session's may live where another user cannot read.
_SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or _SYSTEM_PYTHON is None,
    reason="running a process as another user needs root, setpriv and a system python3",
)
def test_a_connection_from_another_user_is_closed_unanswered(target: Any) -> None:
    import ray

    address = ray.get(target.lane_address.remote())
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(_SYSTEM_PYTHON),
            "-c",
            _OTHER_USER,
            address.path.lstrip("\0"),  # abstract: the name after its NUL byte
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b''"  # closed: no reply, not even an error frame
    assert ray.get(target.counts.remote())[0] == 0
