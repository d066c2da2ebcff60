"""Fallbacks: a model that fails is replaced, for that request, by the next one it lists.

``FallbackBackend`` wraps any ``ModelBackend``. A request whose model fails with a server-side
error (5xx: unreachable, overloaded, timed out, broken) is sent to the model's ``fallbacks`` in
order, with ``model`` rewritten, so the answer names the model that really answered. Request
errors (4xx) are never retried elsewhere: another model would refuse the same request. A stream
falls back only before its first chunk; after that the client already has part of an answer.
This is the one layer that retries model calls in the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._errors import APIError
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

if TYPE_CHECKING:
    from serve._api import ModelBackend

_Request = TypeVar("_Request", ChatCompletionRequest, EmbeddingRequest)
_Response = TypeVar("_Response")


class FallbackBackend:
    """A ``ModelBackend`` that tries each model's fallbacks when it fails.

    Args:
        backend: Where requests go.
        fallbacks: For each model id, the model ids to try next, in order.
    """

    def __init__(self, backend: ModelBackend, fallbacks: Mapping[str, Sequence[str]]) -> None:
        self._backend = backend
        self._fallbacks = {name: list(names) for name, names in fallbacks.items()}

    def model_ids(self) -> Sequence[str]:
        """Ids of the served models."""
        return self._backend.model_ids()

    def chain(self, model: str) -> list[str]:
        """``model`` then its fallbacks, in the order they are tried."""
        return [model, *self._fallbacks.get(model, [])]

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Answers on the first model of the chain that does not fail."""
        return await self._first(request, self._backend.chat)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds on the first model of the chain that does not fail."""
        return await self._first(request, self._backend.embed)

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streams from the first model of the chain that starts a stream."""
        failure: APIError | None = None
        for model in self.chain(request.model):
            chunks = self._backend.chat_stream(request.model_copy(update={"model": model}))
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                return
            except APIError as error:
                if error.status_code < 500:
                    raise
                failure = error
                continue
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                # Closed early (client gone): close the model's stream too, so it stops.
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        assert failure is not None  # the chain is never empty
        raise failure

    async def check_health(self) -> None:
        """Health of the wrapped backend."""
        await self._backend.check_health()

    async def _first(
        self, request: _Request, call: Callable[[_Request], Awaitable[_Response]]
    ) -> _Response:
        failure: APIError | None = None
        for model in self.chain(request.model):
            try:
                return await call(request.model_copy(update={"model": model}))
            except APIError as error:
                if error.status_code < 500:
                    raise
                failure = error
        assert failure is not None  # the chain is never empty
        raise failure
