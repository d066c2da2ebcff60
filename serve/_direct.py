"""The ingress replica's own HTTP listener: the same API, without Serve's proxy hop.

Through Serve's HTTP proxy a request crosses two processes: the proxy parses it, routes it to
the ingress replica with an actor call, the replica calls back to the proxy for the body, and
the response goes back the same way. On a 2-core machine that costs ~8-11 ms per request,
against ~2-4 ms through this listener (issue 4, `bench/serve.py`). The direct listener is a
uvicorn server that the ingress replica runs on its own event loop, serving the very FastAPI
app Serve calls; a request goes client -> replica. It is Ray Serve's "direct ingress" idea
(replicas listening on ports of their own) on a port the settings fix, so a client's URL
survives a replica restart.

Serve still places, health-checks and restarts the replica; the proxy keeps serving the same
app on ``ServeSettings.port``. Serve's request metrics count only the proxy's requests, so the
listener reports its own (``observe``; Ray metrics in ``serve._app``). ``max_ongoing_requests``
does not bound direct requests: the engines queue them themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocols import ConfigurationError
from serve._api import error_response
from serve._errors import ErrorDetail
from serve._settings import url_host

logger = logging.getLogger(__name__)
# How long a stopping listener lets requests in flight finish before it closes them.
CLOSE_TIMEOUT_S = 5
# Routes get a metric label of their own; any other path counts as "other" (bounded labels).
ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/embeddings", "/health")

RequestObserver = Callable[[str, str, int, float], None]
"""Told of each finished request: (route, method, status, seconds)."""


@dataclass(frozen=True)
class DirectAddress:
    """Where the ingress replica's direct listener binds, and the app's route prefix."""

    host: str
    port: int
    route_prefix: str = "/"


def free_port(host: str) -> int:
    """A port nobody on this machine holds on ``host`` now (the kernel's pick)."""
    sock = _bind(host, 0)
    with sock:
        return int(sock.getsockname()[1])


class DirectListener:
    """Serves an ASGI app on ``host:port`` from the running event loop (the replica's).

    The socket is bound in the constructor, so a port in use fails the replica's start with a
    message that says which setting to change; serving starts on the loop right away.

    Args:
        app: The ASGI app (the ingress's FastAPI app).
        host: Interface to bind; a wildcard listens on every interface.
        port: Port to bind; 0 lets the kernel pick a free one.
        route_prefix: The app's Serve route prefix; the API lives under it here too.
        observe: Told of every finished request (metrics), if given.

    Raises:
        ConfigurationError: The address cannot be bound.
        RuntimeError: Called with no event loop running.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        route_prefix: str = "/",
        observe: RequestObserver | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._socket = _bind(host, port)
        self._host = host
        self._prefix = prefix = route_prefix.rstrip("/")
        if prefix:
            app = _Prefixed(app, prefix)
        if observe is not None:
            app = _Observed(app, observe, prefix)
        config = uvicorn.Config(
            app,
            loop="none",  # the replica's loop, already running
            http="httptools",
            lifespan="off",  # Serve runs the app's lifespan for both listeners
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=CLOSE_TIMEOUT_S,
        )
        self._server = _Server(config)
        self._task = loop.create_task(self._server.serve(sockets=[self._socket]))

    @property
    def port(self) -> int:
        """The port it listens on (the kernel's pick when asked for 0)."""
        return int(self._socket.getsockname()[1])

    def url(self, node_ip: str) -> str:
        """The OpenAI base URL of this listener; ``node_ip`` stands in for a wildcard host."""
        return f"http://{url_host(self._host, wildcard=node_ip)}:{self.port}{self._prefix}/v1"

    @property
    def serving(self) -> bool:
        """Whether the server task is still running."""
        return not self._task.done()

    async def close(self) -> None:
        """Stops accepting, lets requests in flight finish for ``CLOSE_TIMEOUT_S``, then closes."""
        self._server.should_exit = True
        try:
            # uvicorn cancels what is still running after its graceful timeout; this is a backstop.
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT_S + 1.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception:  # the server already died; nothing left to stop
            logger.warning("the direct listener had stopped with an error", exc_info=True)
        finally:
            self._socket.close()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the replica process (Ray, Serve) owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # A restarted replica must get its port back while the old connections sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError as error:
        sock.close()
        raise ConfigurationError(
            f"the model API's direct listener cannot bind {host}:{port} ({error.strerror}): "
            "set serve.direct_port to a free port, 0 for any, or null to serve through the "
            "Serve proxy only"
        ) from None
    return sock


class _Prefixed:
    """Serves ``app`` under ``prefix`` the way Serve's proxy does: the prefix is the root path.

    Starlette routes on the path below ``root_path``; a path outside the prefix is a 404 in the
    API's error shape, as it is through the proxy.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self._app = app
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (
            path == self._prefix or path.startswith(self._prefix + "/")
        ):
            scope = {**scope, "root_path": scope.get("root_path", "") + self._prefix}
            await self._app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # the API has none; refuse it the ASGI way
            await send({"type": "websocket.close", "code": 1000})
            return
        response = error_response(
            404,
            ErrorDetail(
                message=f"Not Found: {path} is outside the app's route prefix {self._prefix}",
                type="invalid_request_error",
                code="unknown_url",
            ),
        )
        await response(scope, receive, send)


class _Observed:
    """Tells ``observe`` of each HTTP request once it has been answered (or has failed)."""

    def __init__(self, app: ASGIApp, observe: RequestObserver, prefix: str) -> None:
        self._app = app
        self._observe = observe
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before it answers

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        finally:
            path: str = scope.get("path", "")
            route = path.removeprefix(self._prefix)
            self._observe(
                route if route in ROUTES else "other",
                str(scope.get("method", "")),
                status,
                time.perf_counter() - started,
            )
