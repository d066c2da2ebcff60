"""An in-cluster client with the ``openai.AsyncOpenAI`` interface, over Serve deployment handles.

``HandleClient(settings).chat.completions.create(...)`` takes the same arguments as the ``openai``
client and returns the same ``openai`` types (``ChatCompletion``, an async stream of
``ChatCompletionChunk``, ``CreateEmbeddingResponse``); errors are the same ``openai`` exceptions
(``BadRequestError`` naming the field, ``NotFoundError``, ``InternalServerError``...). Requests go
from the caller's process straight to the replica that runs the model through ``DeploymentHandle``
calls (its model deployment, or the ingress replica for a colocated model): no HTTP proxy.
Validation and fallbacks are the ones the HTTP app uses. Bearer
keys do not apply: a caller inside the cluster can reach the replicas anyway.

No retries here, like the HTTP client agents use with ``max_retries=0``: the caller's retry layer
(tenacity in agents) and the fallback chain own them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import httpx
import openai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChunk
from pydantic import BaseModel, ValidationError

from serve._api import ModelBackend, validation_error_detail
from serve._embedding_types import EmbeddingRequest
from serve._errors import APIError, ErrorDetail, ModelNotFoundError
from serve._settings import ServeSettings
from serve._types import ChatCompletionChunk, ChatCompletionRequest

# openai 3 builds its errors on `httpx2` (a fork of httpx); older releases on httpx itself.
_http: Any = importlib.import_module("httpx2") if importlib.util.find_spec("httpx2") else httpx
_Model = TypeVar("_Model", bound=BaseModel)
# Arguments of the openai client that shape the HTTP call, not the request; meaningless here.
_TRANSPORT_ARGS = frozenset({"extra_headers", "extra_query", "timeout"})
_STATUS_ERRORS: Mapping[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


class HandleClient:
    """``openai.AsyncOpenAI``-shaped access to the model app from inside the Ray cluster.

    Args:
        settings: The deployed app's settings (its ``app_name`` and models with their fallbacks).
        backend: Where requests go; by default the app's model deployments, by handle. Tests pass
            an ``EngineBackend``.

    Attributes:
        chat: ``chat.completions.create(...)`` as in ``openai``.
        embeddings: ``embeddings.create(...)`` as in ``openai``.
    """

    def __init__(self, settings: ServeSettings, *, backend: ModelBackend | None = None) -> None:
        if backend is None:
            from ray import serve

            from serve._app import INGRESS_DEPLOYMENT, HandleBackend
            from serve._fallback import FallbackBackend

            # A colocated model is served by the ingress replica, which answers the same calls.
            handles = {
                model.name: serve.get_deployment_handle(
                    INGRESS_DEPLOYMENT if model.colocated else model.deployment_name,
                    settings.app_name,
                )
                for model in settings.models
            }
            fallbacks = {model.name: model.fallbacks for model in settings.models}
            backend = FallbackBackend(HandleBackend(handles), fallbacks)
        self._backend = backend
        self.chat = _Chat(backend)
        self.embeddings = _Embeddings(backend)


class _Chat:
    def __init__(self, backend: ModelBackend) -> None:
        self.completions = _Completions(backend)


class _Completions:
    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend

    async def create(self, **kwargs: Any) -> ChatCompletion | ChunkStream:
        """``openai``'s ``chat.completions.create``: a completion, or with ``stream=True`` a stream.

        Raises:
            openai.APIStatusError: The subclass for the status the HTTP app would answer.
        """
        request = _validated(ChatCompletionRequest, kwargs)
        try:
            _require_model(self._backend, request.model)
            if request.stream:
                chunks = self._backend.chat_stream(request)
                first = await anext(chunks)  # request errors surface here, as over HTTP
                return ChunkStream(first, chunks, include_usage=request.include_usage)
            response = await self._backend.chat(request)
        except APIError as error:
            raise _openai_error(error.status_code, error.detail()) from None
        return ChatCompletion.model_validate(response.model_dump(mode="json"))


class _Embeddings:
    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend

    async def create(self, **kwargs: Any) -> CreateEmbeddingResponse:
        """``openai``'s ``embeddings.create``; vectors are floats unless base64 is asked for."""
        request = _validated(EmbeddingRequest, kwargs)
        try:
            _require_model(self._backend, request.model)
            response = await self._backend.embed(request)
        except APIError as error:
            raise _openai_error(error.status_code, error.detail()) from None
        data = response.model_dump(mode="json")
        if request.encoding_format == "base64":  # openai types vectors as floats; keep the text
            return CreateEmbeddingResponse.model_construct(**data)
        return CreateEmbeddingResponse.model_validate(data)


class ChunkStream:
    """The chunks of a streamed completion, as ``openai``'s ``AsyncStream`` yields them."""

    def __init__(
        self,
        first: ChatCompletionChunk,
        rest: AsyncIterator[ChatCompletionChunk],
        *,
        include_usage: bool,
    ) -> None:
        self._first: ChatCompletionChunk | None = first
        self._rest = rest
        self._include_usage = include_usage

    def __aiter__(self) -> AsyncIterator[OpenAIChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[OpenAIChunk]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield _chunk(first)
            async for chunk in self._rest:
                if chunk.usage is not None and not self._include_usage:
                    continue
                yield _chunk(chunk)
        except APIError as error:
            raise _openai_error(error.status_code, error.detail()) from None
        finally:
            await self.close()

    async def close(self) -> None:
        """Stops the stream; the model stops generating."""
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _chunk(chunk: ChatCompletionChunk) -> OpenAIChunk:
    return OpenAIChunk.model_validate(chunk.model_dump(mode="json"))


def _validated(cls: type[_Model], kwargs: dict[str, Any]) -> _Model:
    """The request ``kwargs`` describe; a 400 naming the field when they are invalid."""
    body = {
        key: value
        for key, value in kwargs.items()
        if key not in _TRANSPORT_ARGS
        and key != "extra_body"
        and not isinstance(value, openai.NotGiven)
    }
    body.update(kwargs.get("extra_body") or {})
    try:
        return cls.model_validate(body)
    except ValidationError as error:
        raise _openai_error(400, validation_error_detail(error.errors())) from None


def _require_model(backend: ModelBackend, model: str) -> None:
    served = backend.model_ids()
    if model not in served:
        raise ModelNotFoundError(
            f"The model {model!r} does not exist. Served models: {', '.join(served)}."
        )


def _openai_error(status_code: int, detail: ErrorDetail) -> openai.APIStatusError:
    """The exception the ``openai`` client raises when the HTTP app answers this error."""
    body = detail.model_dump(mode="json")
    response = _http.Response(
        status_code,
        json={"error": body},
        request=_http.Request("POST", "http://serve-handle/v1"),
    )
    cls = _STATUS_ERRORS.get(status_code)
    if cls is None:
        cls = openai.InternalServerError if status_code >= 500 else openai.APIStatusError
    return cls(f"Error code: {status_code} - {{'error': {body}}}", response=response, body=body)
