"""The OpenAI-compatible HTTP API as a FastAPI app, independent of Ray.

The app talks to models through a ``ModelBackend``: in-process engines (``EngineBackend``, for
tests and single-process use) or Serve deployment handles (``serve._app``). Every error leaves in
OpenAI's shape; bad input is a 4xx that names the field, never a 500.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve._embedding_types import EmbeddingRequest, EmbeddingResponse
from serve._engine import Engine
from serve._errors import (
    APIError,
    AuthenticationError,
    ErrorDetail,
    ErrorResponse,
    ModelNotFoundError,
    ModelUnavailableError,
)
from serve._types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
)


class ModelBackend(Protocol):
    """Where the API sends requests: a set of models addressed by id."""

    def model_ids(self) -> Sequence[str]:
        """Ids of the served models, in configuration order."""
        ...

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Answers a request whose ``model`` is one of ``model_ids()``; raises ``APIError``."""
        ...

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Like ``chat``, as chunks (see ``Engine.chat_stream``); errors before the first one."""
        ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds the texts of a request whose ``model`` is one of ``model_ids()``."""
        ...

    async def check_health(self) -> None:
        """Returns when every model can serve; raises otherwise."""
        ...


class EngineBackend:
    """A ``ModelBackend`` over engines in this process.

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
        return await self._engines[request.model].chat(request)

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Streams the request from the engine of ``request.model``."""
        return self._engines[request.model].chat_stream(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeds on the engine of ``request.model``."""
        return await self._engines[request.model].embed(request)

    async def check_health(self) -> None:
        """Checks every engine."""
        for engine in self._engines.values():
            engine.check_health()


def create_app(backend: ModelBackend, *, api_keys: Sequence[str] = ()) -> FastAPI:
    """The OpenAI-compatible API over ``backend``.

    Args:
        backend: Models to serve.
        api_keys: Bearer tokens accepted on ``/v1/*``; empty means no authentication.

    Returns:
        A FastAPI app with ``GET /v1/models``, ``POST /v1/chat/completions``,
        ``POST /v1/embeddings`` and ``GET /health``.
    """
    app = FastAPI(title="troupe models", summary="OpenAI-compatible model API")
    _install_error_handlers(app)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_bearer_auth(api_keys))])
    started = int(time.time())

    @v1.get("/models")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=id_, created=started) for id_ in backend.model_ids()])

    @v1.post("/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(
        request: ChatCompletionRequest,
    ) -> ChatCompletionResponse | StreamingResponse:
        _require_model(backend, request.model)
        if request.stream:
            return await _stream_response(backend, request)
        return await backend.chat(request)

    @v1.post("/embeddings", response_model=EmbeddingResponse)
    async def embeddings(request: EmbeddingRequest) -> EmbeddingResponse:
        _require_model(backend, request.model)
        return await backend.embed(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        await backend.check_health()
        return {"status": "ok", "models": list(backend.model_ids())}

    app.include_router(v1)
    return app


async def _stream_response(
    backend: ModelBackend, request: ChatCompletionRequest
) -> StreamingResponse:
    """Server-sent events of the completion.

    The first chunk is awaited before the response starts, so request errors raised by the
    engine (context too long, bad schema) still answer with their 4xx status.
    """
    chunks = backend.chat_stream(request)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise ModelUnavailableError("the model ended the stream before it began") from None
    return StreamingResponse(
        _sse(first, chunks, include_usage=request.include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], *, include_usage: bool
) -> AsyncIterator[str]:
    """Chunks as SSE events, ending with ``[DONE]``; a failure mid-stream becomes an error event."""
    try:
        yield first.to_sse()
        async for chunk in rest:
            if chunk.usage is not None and not include_usage:
                continue
            yield chunk.to_sse()
    except APIError as error:
        yield _error_event(error.detail())
        return
    except Exception as error:  # headers are sent: an event is the only way left to tell
        yield _error_event(_internal_error_detail(error))
        return
    finally:
        # On client disconnect this generator is closed; closing the source too stops the model.
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    yield "data: [DONE]\n\n"


def _error_event(detail: ErrorDetail) -> str:
    return f"data: {ErrorResponse(error=detail).model_dump_json()}\n\n"


def _require_model(backend: ModelBackend, model: str) -> None:
    served = backend.model_ids()
    if model not in served:
        raise ModelNotFoundError(
            f"The model {model!r} does not exist. Served models: {', '.join(served)}."
        )


def _bearer_auth(api_keys: Sequence[str]) -> Callable[[Request], Awaitable[None]]:
    """A dependency that demands one of ``api_keys`` as bearer token (none when empty)."""
    keys = [key.encode() for key in api_keys]

    # Async although it never awaits: FastAPI runs a sync dependency in a worker thread, a
    # thread hop on every /v1 request for a few microseconds of work.
    async def authenticate(request: Request) -> None:
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Missing API key: send it as `Authorization: Bearer <key>`.")
        # Compare with every key (a list, not a short-circuiting generator), each in constant
        # time, so timing reveals neither a prefix nor which key matched.
        presented = token.strip().encode()
        if not any([hmac.compare_digest(presented, key) for key in keys]):
            raise AuthenticationError("Incorrect API key provided.")

    return authenticate


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error_response)
    app.add_exception_handler(RequestValidationError, _validation_error_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _internal_error_response)


def error_response(status_code: int, detail: ErrorDetail) -> JSONResponse:
    """An OpenAI-shaped error response."""
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse(
        status_code=status_code,
        content=ErrorResponse(error=detail).model_dump(mode="json"),
        headers=headers,
    )


async def _api_error_response(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return error_response(error.status_code, error.detail())


async def _validation_error_response(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(400, validation_error_detail(error.errors()))


def validation_error_detail(errors: Sequence[Any]) -> ErrorDetail:
    """The 400 body for pydantic/FastAPI validation errors: each problem, naming its field."""
    problems = [_describe(problem) for problem in errors]
    first_param = problems[0][0] if problems else None
    message = "; ".join(f"{param}: {text}" if param else text for param, text in problems)
    return ErrorDetail(
        message=f"Invalid request: {message}",
        type="invalid_request_error",
        param=first_param,
        code="invalid_request",
    )


def _describe(problem: Any) -> tuple[str | None, str]:
    """(dotted field, explanation) for one pydantic/FastAPI validation problem."""
    location = [str(part) for part in problem.get("loc", ())]
    if location[:1] == ["body"]:
        location = location[1:]
    kind = problem.get("type", "")
    if kind == "json_invalid":
        context = problem.get("ctx", {}).get("error", "")
        return None, f"the body is not valid JSON ({context})".replace(" ()", "")
    if kind == "missing" and not location:
        return None, "a JSON request body is required"
    if kind in ("model_attributes_type", "dict_type") and not location:
        return None, "the body must be a JSON object"
    # Pydantic prefixes errors from our own validators with "Value error, ".
    text = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
    return (".".join(_drop_union_tag(location)) or None), text


def _drop_union_tag(location: list[str]) -> list[str]:
    """Removes the member names pydantic puts in the path of a union field's error.

    ``response_format.json_schema.json_schema.name`` names the field the client wrote as
    ``response_format.json_schema.name``; ``input.list[str].2`` is ``input.2``.
    """
    tags = ("text", "json_object", "json_schema")
    if len(location) > 2 and location[0] == "response_format" and location[1] in tags:
        return [location[0], *location[2:]]
    return [part for part in location if not _UNION_MEMBER.match(part)]


# Union members in error paths: `str`, `list[str]`, `literal['none','auto']`, `NamedToolChoice`.
# Field names are lowercase and list positions are digits, so neither is ever dropped.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list\[.*\]|literal\[.*\]|[A-Z]\w*)$")


async def _http_error_response(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(error.status_code)
    return error_response(
        error.status_code,
        ErrorDetail(message=str(error.detail), type="invalid_request_error", code=code),
    )


async def _internal_error_response(_: Request, error: Exception) -> JSONResponse:
    return error_response(500, _internal_error_detail(error))


def _internal_error_detail(error: Exception) -> ErrorDetail:
    return ErrorDetail(
        message=f"internal error: {type(error).__name__}: {error}",
        type="server_error",
        code="internal_error",
    )
