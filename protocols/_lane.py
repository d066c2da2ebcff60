"""Direct lanes: calls between Ray actors on one node over a Unix socket, beside Ray.

A Ray actor call from an async actor costs ~1.1 ms on a 2-core node (task submission, gRPC,
and a thread hop into each event loop, both ways); the same message over a Unix socket
between the two event loops takes ~0.1 ms. The bus and the memory client send their hot calls
(a step to an executor, a recall) this way when caller and callee share a node, and through
Ray otherwise. Ray still places, restarts and names the actors; a lane is only a faster wire
to an actor the caller already holds a handle to.

- The serving actor opens its lane on first ask (``LaneServer.address``, a Ray call) and
  serves only the methods it names. The socket is in Linux's abstract namespace (no file to
  clean up; it goes with the process), and a connection from another user is closed before
  anything is read (``SO_PEERCRED``), since frames are pickles.
- A caller keeps one connection per actor and event loop (``call``), many calls in flight on
  it. Anything that stops a lane from being used (another node, not Linux, an actor without
  lanes, a call the peer cannot unpickle) raises ``LaneUnavailable`` before the method ran:
  the caller sends the same call through Ray. A lane that closes with calls in flight raises
  ``LaneBroken`` for them: like a Ray call to an actor that died, the method may or may not
  have run, and the caller decides (the bus tries another member; memory, whose calls are
  idempotent, asks again through Ray).
- The Ray dashboard lists Ray calls only: with lanes, these calls do not appear there as
  tasks. ``BusConfig.direct_lanes`` turns them off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import os
import pickle
import secrets
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Collection
from typing import NamedTuple

import ray

logger = logging.getLogger(__name__)

# A frame: body length, call id, kind; then the body (a pickle).
_FRAME = struct.Struct("!IQB")
_CALL, _CANCEL = 0, 1  # caller -> server
_OK, _ERROR, _UNREADABLE = 0, 1, 2  # server -> caller
_MAX_BODY = (1 << 32) - 1
# After a lane could not be had, ask again only this much later (the actor may have restarted
# on this node, or its lane opened).
_RETRY_AFTER_S = 30.0
_CREDENTIALS = struct.Struct("3i")  # pid, uid, gid


class LaneAddress(NamedTuple):
    """Where an actor serves its lane."""

    node_id: str
    path: str
    uid: int


class LaneUnavailable(Exception):
    """No lane can carry this call (the method did not run): send it through Ray."""


class LaneBroken(Exception):
    """The lane closed while the call was in flight: the method may or may not have run."""


class LaneRemoteError(Exception):
    """The served method raised ``cause``."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _frame(call_id: int, kind: int, body: bytes) -> bytes:
    if len(body) > _MAX_BODY:
        raise LaneUnavailable(f"a {len(body)}-byte message is too large for a lane")
    return _FRAME.pack(len(body), call_id, kind) + body


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    size, call_id, kind = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return call_id, kind, await reader.readexactly(size)


def lanes_supported() -> bool:
    """Abstract Unix sockets and ``SO_PEERCRED`` are Linux's."""
    return sys.platform == "linux"


# -- serving ----------------------------------------------------------------------------------


class LaneServer:
    """Serves ``methods`` of ``target`` on a lane.

    ``address`` starts it on the running event loop, so the methods run on the loop that runs
    the actor's Ray calls (an async actor); ``address_in_thread`` starts it on a loop of its
    own thread, for a threaded actor whose methods are thread-safe (they run there, beside the
    Ray calls).

    Args:
        target: The object whose methods are served (the actor body).
        methods: The names of the methods a caller may call.
    """

    def __init__(self, target: object, methods: Collection[str]):
        self._target = target
        self._methods = frozenset(methods)
        self._address: LaneAddress | None = None
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._served = 0

    @property
    def served(self) -> int:
        """Calls answered over this lane so far (for operators and tests)."""
        return self._served

    async def address(self) -> LaneAddress | None:
        """The lane's address, serving it on the running loop from the first call; None
        where lanes are not supported."""
        if not lanes_supported():
            return None
        if self._address is None:
            if self._starting is None:  # two first asks start one server
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        return self._address

    async def _start(self) -> None:
        path = f"\0troupe-lane-{os.getpid()}-{secrets.token_hex(8)}"
        # Bound here: uvloop (Ray's loop) takes no abstract names for a path.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(128)
            listener.setblocking(False)
            self._server = await asyncio.start_unix_server(self._connection, sock=listener)
        except BaseException:
            listener.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._address = LaneAddress(ray.get_runtime_context().get_node_id(), path, os.getuid())

    def address_in_thread(self) -> LaneAddress | None:
        """``address``, serving on an event loop in a daemon thread of its own."""
        if not lanes_supported():
            return None
        with self._lock:
            if self._address is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="troupe-lane", daemon=True).start()
                asyncio.run_coroutine_threadsafe(self.address(), loop).result()
        return self._address

    def close(self) -> None:
        """Stops accepting connections (the process's exit closes the rest)."""
        server, loop = self._server, self._loop
        if server is None or loop is None:
            return
        if loop.is_running() and not _on_loop(loop):
            loop.call_soon_threadsafe(server.close)
        else:
            server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls: dict[int, asyncio.Task[None]] = {}
        try:
            if not _same_user(writer):
                return
            while True:
                call_id, kind, body = await _read_frame(reader)
                if kind == _CANCEL:
                    task = calls.get(call_id)
                    if task is not None:
                        task.cancel()
                    continue
                # It starts after this line (no await between): its end removes it from calls.
                calls[call_id] = asyncio.ensure_future(self._serve(call_id, body, writer, calls))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the caller went away
        finally:
            for task in calls.values():
                task.cancel()
            writer.close()

    async def _serve(
        self,
        call_id: int,
        body: bytes,
        writer: asyncio.StreamWriter,
        calls: dict[int, asyncio.Task[None]],
    ) -> None:
        try:
            await self._answer(call_id, body, writer)
        finally:
            calls.pop(call_id, None)

    async def _answer(self, call_id: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            method, args = pickle.loads(body)
            if method not in self._methods:
                raise AttributeError(f"{method!r} is not served on this lane")
            function = getattr(self._target, method)
        except Exception as exc:  # e.g. a class this process cannot import: Ray can carry it
            writer.write(_frame(call_id, _UNREADABLE, _dumps(repr(exc))))
            return
        self._served += 1
        try:
            result = function(*args)
            if inspect.isawaitable(result):
                result = await result
            reply = _frame(call_id, _OK, _dump_result(result))
        except Exception as exc:
            reply = _frame(call_id, _ERROR, _error_body(exc))
        writer.write(reply)


def _dump_result(value: object) -> bytes:
    try:
        return _dumps(value)
    except Exception:  # the method has run: carry what only cloudpickle can, as Ray would
        return bytes(ray.cloudpickle.dumps(value))


def _error_body(exc: Exception) -> bytes:
    try:
        body = _dumps(exc)
        pickle.loads(body)  # some exceptions pickle but cannot be rebuilt (required arguments)
        return body
    except Exception:  # such an exception still says what went wrong
        return _dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    try:
        _, uid, _ = _CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
        )
    except (OSError, AttributeError):
        return False
    if uid != os.getuid():
        logger.warning("lane: refused a connection from uid %d", uid)
        return False
    return True


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# -- calling ----------------------------------------------------------------------------------


class _Connection:
    """One connection to one actor's lane; calls multiplexed by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.closed = False
        self._reading = asyncio.ensure_future(self._read(reader))

    async def call(self, method: str, args: tuple[object, ...], timeout: float | None) -> object:
        if self.closed:  # nothing sent: the caller may use Ray instead
            raise LaneUnavailable("the lane closed")
        try:
            body = _dumps((method, args))
        except Exception as exc:  # Ray's serializer handles more than pickle does
            raise LaneUnavailable(f"not picklable for a lane: {exc!r}") from None
        call_id = next(self._ids)
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            self._writer.write(_frame(call_id, _CALL, body))
            kind, reply = await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._send(call_id, _CANCEL)
            raise
        finally:
            self._pending.pop(call_id, None)
        if kind == _OK:
            return pickle.loads(reply)
        if kind == _UNREADABLE:
            raise LaneUnavailable(f"the peer could not take the call: {pickle.loads(reply)}")
        raise LaneRemoteError(pickle.loads(reply))

    def _send(self, call_id: int, kind: int) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._writer.write(_frame(call_id, kind, b""))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call_id, kind, body = await _read_frame(reader)
                future = self._pending.get(call_id)
                if future is not None and not future.done():
                    future.set_result((kind, body))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LaneBroken("the lane closed during the call"))
        self._writer.close()


class _Lanes:
    """One event loop's connections, by actor id."""

    def __init__(self) -> None:
        self._connections: dict[str, _Connection] = {}
        self._opening: dict[str, asyncio.Future[_Connection | None]] = {}
        self._none_until: dict[str, float] = {}

    async def connection(self, handle: object) -> _Connection:
        key = _actor_key(handle)
        found = self._connections.get(key)
        if found is not None and not found.closed:
            return found
        loop = asyncio.get_running_loop()
        if self._none_until.get(key, 0.0) > loop.time():
            raise LaneUnavailable("this actor has no lane to this process")
        opening = self._opening.get(key)
        if opening is None:
            opening = asyncio.ensure_future(self._open(handle))
            self._opening[key] = opening
            opening.add_done_callback(lambda _: self._opening.pop(key, None))
        connection = await asyncio.shield(opening)
        if connection is None:
            self._none_until[key] = loop.time() + _RETRY_AFTER_S
            raise LaneUnavailable("this actor has no lane to this process")
        self._connections[key] = connection
        return connection

    async def _open(self, handle: object) -> _Connection | None:
        try:
            address = await handle.lane_address.remote()  # type: ignore[attr-defined]
        except Exception as exc:  # no such method, or the actor is down: Ray reports that itself
            logger.debug("lane: no address: %r", exc)
            return None
        if (
            not isinstance(address, LaneAddress)
            or address.node_id != _node_id()
            or address.uid != os.getuid()
        ):
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, address.path)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        except OSError as exc:
            sock.close()
            logger.debug("lane: no connection: %r", exc)
            return None
        return _Connection(reader, writer)


_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lanes] = weakref.WeakKeyDictionary()


@functools.cache
def _node_id() -> str:
    return str(ray.get_runtime_context().get_node_id())


def _actor_key(handle: object) -> str:
    actor_id = getattr(handle, "_actor_id", None)
    if actor_id is None:
        raise LaneUnavailable("not a Ray actor handle")
    return str(actor_id.hex())


async def lane_call(
    handle: object, method: str, *args: object, timeout: float | None = None
) -> object:
    """Calls ``method`` of the actor behind ``handle`` over its lane.

    Raises:
        LaneUnavailable: No lane carries it (the method did not run): use Ray.
        LaneBroken: The lane closed during the call.
        LaneRemoteError: The method raised.
        TimeoutError: No reply within ``timeout`` (the call is cancelled on the actor).
    """
    if not lanes_supported() or not ray.is_initialized():
        raise LaneUnavailable("lanes need Linux and a connected Ray")
    loop = asyncio.get_running_loop()
    lanes = _LANES.get(loop)
    if lanes is None:
        lanes = _LANES[loop] = _Lanes()
    connection = await lanes.connection(handle)
    return await connection.call(method, args, timeout)
