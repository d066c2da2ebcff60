"""Engines in the ingress replica: routing by model, and failures shaped as a replica's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serve import APIError, ChatCompletionChunk, ChatCompletionRequest, EngineBackend
from serve._colocated import ColocatedBackend, ReportingMethods, RoutingBackend
from serve._errors import APIErrorReport, ContextLengthExceededError
from serve._fallback import FallbackBackend
from tests.serve.test_serve_api import MODEL, FakeEngine


def request(model: str = MODEL) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    )


def test_an_engine_bug_is_a_5xx_the_fallback_acts_on() -> None:
    broken = FakeEngine("broken")
    broken.raise_next = ValueError("bad state")
    backend = ColocatedBackend([broken, FakeEngine()])

    with pytest.raises(APIError) as caught:
        asyncio.run(backend.chat(request("broken")))
    broken.raise_next = ValueError("bad state")
    answer = asyncio.run(FallbackBackend(backend, {"broken": [MODEL]}).chat(request("broken")))

    assert (caught.value.status_code, caught.value.code) == (500, "engine_error")
    assert "ValueError: bad state" in caught.value.message
    assert answer.model == MODEL


def test_request_errors_pass_unchanged() -> None:
    engine = FakeEngine()
    engine.raise_next = ContextLengthExceededError("too long")

    with pytest.raises(ContextLengthExceededError):
        asyncio.run(ColocatedBackend([engine]).chat(request()))


def test_routing_sends_each_model_to_its_backend_in_configuration_order() -> None:
    local, other = FakeEngine(reply="local"), FakeEngine("other", reply="other")
    routing = RoutingBackend({"other": EngineBackend([other]), MODEL: ColocatedBackend([local])})

    answer = asyncio.run(routing.chat(request("other")))

    assert routing.model_ids() == ["other", MODEL]
    assert answer.choices[0].message.content == "other"
    assert (len(local.requests), len(other.requests)) == (0, 1)


def test_health_fails_when_a_colocated_engine_is_down() -> None:
    engine = FakeEngine()
    engine.healthy = False

    with pytest.raises(APIError) as caught:
        asyncio.run(RoutingBackend({MODEL: ColocatedBackend([engine])}).check_health())

    assert caught.value.status_code == 503


class _Replica(ReportingMethods):
    def __init__(self, engine: FakeEngine) -> None:
        self._serving = ColocatedBackend([engine])


def test_replica_methods_return_api_errors_as_reports() -> None:
    engine = FakeEngine()
    engine.raise_next = ContextLengthExceededError("too long")

    async def stream() -> list[ChatCompletionChunk | APIErrorReport]:
        return [item async for item in _Replica(engine).chat_stream(request())]

    report = asyncio.run(_Replica(engine).chat(request()))
    engine.raise_next = ContextLengthExceededError("too long")
    [streamed] = asyncio.run(stream())

    assert isinstance(report, APIErrorReport) and report.status_code == 400
    assert isinstance(streamed, APIErrorReport) and streamed.error.code == "context_length_exceeded"


class _Endless(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        try:
            while True:
                async for chunk in super().chat_stream(request):
                    yield chunk
        finally:
            self.closed = True


def test_closing_a_stream_closes_the_engine_stream() -> None:
    engine = _Endless()

    async def take_two() -> None:
        chunks = ColocatedBackend([engine]).chat_stream(request())
        assert isinstance(chunks, AsyncIterator)
        await anext(chunks)
        await anext(chunks)
        await chunks.aclose()  # type: ignore[attr-defined]

    asyncio.run(take_two())

    assert engine.closed
