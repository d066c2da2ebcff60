"""The passthrough engine: forwards requests to any external OpenAI-compatible API.

Request errors the remote API answers (4xx) come back with its status and message; failures that
say nothing about the request (unreachable, timeout, 5xx) become ``ModelUnavailableError`` (503),
which is what makes the app try a model's ``fallbacks``. Retries are not done here: the fallback
chain owns them (``serve._fallback``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from protocols import ConfigurationError
from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._engine import Engine
from serve._errors import APIError, EngineFailedError, ModelUnavailableError
from serve._settings import PassthroughSettings
from serve._types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse


class PassthroughEngine(Engine):
    """A model served by another OpenAI-compatible API, reached over HTTP.

    Args:
        settings: Base URL, remote model id, key and timeout. ``api_key_env`` must already be
            resolved into ``api_key`` (``ServeSettings.with_secrets``, done at the edge).

    Raises:
        ConfigurationError: The key is named by ``api_key_env`` but was never resolved.
    """

    def __init__(self, settings: PassthroughSettings) -> None:
        if settings.api_key_env and not settings.api_key:
            raise ConfigurationError(
                f"model {settings.name!r}: the key in {settings.api_key_env} was not read; "
                "pass the settings through ServeSettings.with_secrets at the edge"
            )
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.timeout_s,
        )
        self._model_id = settings.name
        self._remote_model = settings.remote_model or settings.name
        self._base_url = settings.base_url

    @property
    def model_id(self) -> str:
        """Model id clients use here."""
        return self._model_id

    @property
    def context_size(self) -> int:
        """Unknown for a remote model: the remote API enforces its own limit."""
        return 0

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Forwards a chat request; the answer carries this app's model id."""
        body = await self._post("chat/completions", self._body(request))
        response = _parse(ChatCompletionResponse, body, self._model_id)
        return response.model_copy(update={"model": self._model_id})

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Forwards a streamed chat request chunk by chunk."""
        try:
            async with self._client.stream(
                "POST", "chat/completions", json=self._body(request)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._status_error(response)
                async for line in response.aiter_lines():
                    data = line.removeprefix("data:").strip()
                    if not line.startswith("data:") or not data:
                        continue
                    if data == "[DONE]":
                        return
                    chunk = _parse(ChatCompletionChunk, data, self._model_id)
                    yield chunk.model_copy(update={"model": self._model_id})
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Forwards an embeddings request."""
        body = await self._post("embeddings", self._body(request))
        response = _parse(EmbeddingResponse, body, self._model_id)
        return response.model_copy(update={"model": self._model_id})

    def check_health(self) -> None:
        """Always healthy: the remote API is checked by each request, not by Serve."""

    def _body(self, request: BaseModel) -> dict[str, Any]:
        body = request.model_dump(mode="json", exclude_none=True, by_alias=True)
        body["model"] = self._remote_model
        return body

    async def _post(self, path: str, body: dict[str, Any]) -> str:
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        if response.status_code >= 400:
            raise self._status_error(response)
        return response.text

    def _unreachable(self, error: httpx.HTTPError) -> ModelUnavailableError:
        kind = "timed out" if isinstance(error, httpx.TimeoutException) else "is unreachable"
        return ModelUnavailableError(
            f"model {self._model_id!r}: the remote API at {self._base_url} {kind} "
            f"({type(error).__name__})"
        )

    def _status_error(self, response: httpx.Response) -> APIError:
        message = _remote_message(response)
        if response.status_code >= 500:
            return ModelUnavailableError(
                f"model {self._model_id!r}: the remote API answered {response.status_code}: "
                f"{message}"
            )
        # The remote API judged the request; pass its verdict on, unchanged in meaning.
        detail = _remote_detail(response)
        return APIError(
            f"model {self._model_id!r} (remote): {message}",
            status_code=response.status_code,
            param=detail.get("param"),
            code=detail.get("code"),
            error_type=detail.get("type") or "invalid_request_error",
        )


def _remote_detail(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return {k: v for k, v in error.items() if isinstance(v, str)} if isinstance(error, dict) else {}


def _remote_message(response: httpx.Response) -> str:
    return _remote_detail(response).get("message") or response.text[:200] or response.reason_phrase


_M = TypeVar("_M", bound=BaseModel)


def _parse(cls: type[_M], text: str, model: str) -> _M:
    try:
        return cls.model_validate_json(text)
    except ValidationError as error:
        raise EngineFailedError(
            f"model {model!r}: the remote API answered something that is not an OpenAI "
            f"{cls.__name__}: {error.error_count()} problems, first: {error.errors()[0]['msg']}"
        ) from error
