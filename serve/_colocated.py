"""Backends for the ingress replica: engines it hosts itself, and routing by model id.

A colocated model's engine lives in the ingress replica, so a request skips the replica hop
(a handle call: two pickled messages and several thread and process wake-ups). Failures look the
same as from a model deployment: an engine bug is an ``EngineFailedError`` (a 5xx the fallback
chain acts on), never a bare exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._engine import Engine
from serve._errors import APIError, APIErrorReport, EngineFailedError
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

if TYPE_CHECKING:
    from serve._api import ModelBackend


class ColocatedBackend:
    """A ``ModelBackend`` over engines in this replica, failing like a model deployment does.

    Args:
        engines: One engine per model id.
    """

    def __init__(self, engines: Iterable[Engine]) -> None:
        self._engines = {engine.model_id: engine for engine in engines}

    def model_ids(self) -> Sequence[str]:
        """Ids of the engines' models."""
        return list(self._engines)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Runs the request on the engine of ``request.model``."""
        with _engine_errors(request.model):
            return await self._engines[request.model].chat(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds on the engine of ``request.model``."""
        with _engine_errors(request.model):
            return await self._engines[request.model].embed(request)

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streams the request from the engine of ``request.model``."""
        chunks = self._engines[request.model].chat_stream(request)
        try:
            with _engine_errors(request.model):
                async for chunk in chunks:
                    yield chunk
        finally:
            # Closed early (client gone): close the engine's stream now, so it stops generating.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def check_health(self) -> None:
        """Checks every engine; raises the first one's ``APIError``."""
        for engine in self._engines.values():
            with _engine_errors(engine.model_id):
                engine.check_health()


@contextlib.contextmanager
def _engine_errors(model: str) -> Iterator[None]:
    """An engine bug as the 5xx a model replica's bug gives (see ``serve._app``)."""
    try:
        yield
    except APIError:
        raise
    except Exception as error:
        raise EngineFailedError(
            f"model {model!r} failed: {type(error).__name__}: {error}"
        ) from error


class RoutingBackend:
    """A ``ModelBackend`` that sends each model's requests to the backend that serves it.

    Args:
        backends: The backend of each model id, in configuration order.
    """

    def __init__(self, backends: Mapping[str, ModelBackend]) -> None:
        self._backends = dict(backends)
        # Each distinct backend once, for health checks.
        self._distinct = list({id(backend): backend for backend in backends.values()}.values())

    def model_ids(self) -> Sequence[str]:
        """Ids of the served models, in configuration order."""
        return list(self._backends)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Answers on the backend of ``request.model``."""
        return await self._backends[request.model].chat(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds on the backend of ``request.model``."""
        return await self._backends[request.model].embed(request)

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Streams from the backend of ``request.model``."""
        return self._backends[request.model].chat_stream(request)

    async def check_health(self) -> None:
        """Checks every backend."""
        for backend in self._distinct:
            await backend.check_health()


class _Serving(Protocol):
    """What answers for a replica's handle methods: an ``Engine`` or a ``ModelBackend``."""

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse: ...

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...


class ReportingMethods:
    """Handle-callable methods of a replica that return API errors as values, not raises.

    ``APIError`` subclasses do not cross Ray as themselves (Ray wraps them in ``RayTaskError``),
    so a replica returns an ``APIErrorReport`` and the caller's ``HandleBackend`` raises it again.
    Subclasses set ``_serving``.
    """

    _serving: _Serving

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse | APIErrorReport:
        """Answers one request; API errors are returned as values, not raised across Ray."""
        try:
            return await self._serving.chat(request)
        except APIError as error:
            return error.to_report()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse | APIErrorReport:
        """Embeds one request's texts; API errors are returned as values."""
        try:
            return await self._serving.embed(request)
        except APIError as error:
            return error.to_report()

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk | APIErrorReport]:
        """Streams one reply; an API error ends the stream as a report value."""
        chunks = self._serving.chat_stream(request)
        try:
            async for chunk in chunks:
                yield chunk
        except APIError as error:
            yield error.to_report()
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
