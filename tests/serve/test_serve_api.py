"""The HTTP API without Ray or a real model: request mapping and every error path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve import (
    APIError,
    APIErrorReport,
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionUsage,
    ContextLengthExceededError,
    Engine,
    EngineBackend,
    FunctionCall,
    JsonSchemaResponseFormat,
    ModelUnavailableError,
    ToolCall,
    create_app,
)
from serve._app import HandleBackend

MODEL = "fake-model"
CHAT = "/v1/chat/completions"
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}


class FakeEngine(Engine):
    """Answers with a fixed text and records every request it gets."""

    def __init__(self, model_id: str = MODEL, *, reply: str = "hello there") -> None:
        self._model_id = model_id
        self.reply = reply
        self.requests: list[ChatCompletionRequest] = []
        self.raise_next: Exception | None = None
        self.healthy = True

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_size(self) -> int:
        return 128

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(request)
        if self.raise_next is not None:
            raise self.raise_next
        return ChatCompletionResponse(
            model=self._model_id,
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content=self.reply), finish_reason="stop"
                )
            ],
            usage=CompletionUsage(prompt_tokens=7, completion_tokens=2, total_tokens=9),
        )

    def check_health(self) -> None:
        if not self.healthy:
            raise ModelUnavailableError("fake engine is down")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(EngineBackend([engine, FakeEngine("other-model")]))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def body(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    request.update(overrides)
    return request


def assert_openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["message"]
    return dict(payload["error"])


def test_models_list_has_openai_shape(client: TestClient) -> None:
    response = client.get("/v1/models")

    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    assert [card["id"] for card in payload["data"]] == [MODEL, "other-model"]
    for card in payload["data"]:
        assert card["object"] == "model"
        assert isinstance(card["created"], int)
        assert card["owned_by"] == "troupe"


def test_chat_returns_completion_and_passes_parameters(
    client: TestClient, engine: FakeEngine
) -> None:
    response = client.post(
        CHAT,
        json=body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"},
            ],
            max_completion_tokens=12,
            temperature=0.3,
            top_p=0.9,
            stop=["\n", "END"],
            seed=42,
            n=1,
            stream=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
            user="u-1",
            logprobs=False,
        ),
    )

    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["id"].startswith("chatcmpl-")
    assert payload["model"] == MODEL
    assert payload["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hello there"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert payload["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    [request] = engine.requests
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.completion_limit == 12
    assert (request.temperature, request.top_p, request.seed) == (0.3, 0.9, 42)
    assert request.stop_sequences == ["\n", "END"]
    assert isinstance(request.response_format, JsonSchemaResponseFormat)
    assert request.response_format.json_schema.schema_ == {"type": "object"}


def sse_events(response: Any) -> list[Any]:
    """The `data:` payloads of an SSE response, JSON-decoded except the final `[DONE]`."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events: list[Any] = []
    for block in response.text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_stream_sends_openai_chunks_then_done(client: TestClient) -> None:
    response = client.post(CHAT, json=body(stream=True))

    assert response.status_code == 200
    *chunks, done = sse_events(response)
    assert done == "[DONE]"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == "hello there"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)


def test_stream_with_include_usage_ends_with_usage_chunk(client: TestClient) -> None:
    response = client.post(CHAT, json=body(stream=True, stream_options={"include_usage": True}))

    *chunks, done = sse_events(response)
    assert done == "[DONE]"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_stream_error_before_first_chunk_is_a_plain_4xx(
    client: TestClient, engine: FakeEngine
) -> None:
    engine.raise_next = ContextLengthExceededError("maximum context length is 128 tokens")

    error = assert_openai_error(client.post(CHAT, json=body(stream=True)), 400)

    assert error["code"] == "context_length_exceeded"


class BreaksMidStream(FakeEngine):
    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Any]:
        stream = super().chat_stream(request)
        yield await anext(stream)
        raise ModelUnavailableError("replica died")


def test_stream_error_after_first_chunk_is_an_error_event() -> None:
    app = create_app(EngineBackend([BreaksMidStream()]))
    with TestClient(app) as test_client:
        response = test_client.post(CHAT, json=body(stream=True))

    first, error = sse_events(response)
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert error["error"]["code"] == "model_unavailable"


def test_max_completion_tokens_wins_over_max_tokens(client: TestClient, engine: FakeEngine) -> None:
    client.post(CHAT, json=body(max_tokens=50, max_completion_tokens=5))
    client.post(CHAT, json=body(max_tokens=50))

    assert [r.completion_limit for r in engine.requests] == [5, 50]


@pytest.mark.parametrize(
    ("overrides", "drop", "param", "fragment"),
    [
        ({}, "messages", "messages", "Field required"),
        ({}, "model", "model", "Field required"),
        ({"messages": []}, None, "messages", "at least 1"),
        ({"messages": [{"role": "robot", "content": "x"}]}, None, "messages.0.role", "'user'"),
        ({"messages": [{"role": "user"}]}, None, "messages.0", "a user message needs content"),
        (
            {"messages": [{"role": "tool", "content": "4"}]},
            None,
            "messages.0",
            "needs the tool_call_id",
        ),
        ({"temperature": 5}, None, "temperature", "less than or equal to 2"),
        ({"top_p": -0.1}, None, "top_p", "greater than or equal to 0"),
        ({"max_tokens": 0}, None, "max_tokens", "greater than or equal to 1"),
        ({"n": 2}, None, "n", "only n=1 is supported"),
        ({"stream_options": {"include_usage": True}}, None, "stream_options", "stream=true"),
        (
            {"stream": True, "stream_options": {"usage": True}},
            None,
            "stream_options.usage",
            "Extra inputs",
        ),
        ({"functions": []}, None, "functions", "Extra inputs are not permitted"),
        ({"tool_choice": "auto"}, None, "tool_choice", "tool_choice needs tools"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, None, "tool_choice", "'required'"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            None,
            "tool_choice",
            "not among the tools",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            None,
            "tools.0.function.name",
            "pattern",
        ),
        ({"tools": [TOOL, TOOL]}, None, "tools", "repeated: add"),
        (
            {"tools": [TOOL], "response_format": {"type": "json_object"}},
            None,
            "tools",
            "cannot be combined",
        ),
        ({"logprobs": True}, None, "logprobs", "not supported"),
        ({"stop": ["a", "b", "c", "d", "e"]}, None, "stop", "at most 4"),
        ({"response_format": {"type": "xml"}}, None, "response_format", "'json_schema'"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            None,
            "response_format.json_schema.name",
            "Field required",
        ),
    ],
)
def test_bad_request_body_is_400_naming_the_field(
    client: TestClient,
    engine: FakeEngine,
    overrides: dict[str, Any],
    drop: str | None,
    param: str,
    fragment: str,
) -> None:
    request = body(**overrides)
    if drop:
        del request[drop]

    error = assert_openai_error(client.post(CHAT, json=request), 400)

    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    assert fragment in error["message"]
    assert engine.requests == []


def test_malformed_json_is_400(client: TestClient, engine: FakeEngine) -> None:
    response = client.post(
        CHAT,
        content=b'{"model": "fake-model", "messages": [',
        headers={"content-type": "application/json"},
    )

    error = assert_openai_error(response, 400)
    assert "not valid JSON" in error["message"]
    assert engine.requests == []


def test_missing_body_is_400(client: TestClient) -> None:
    error = assert_openai_error(client.post(CHAT), 400)

    assert "body is required" in error["message"]


def test_non_object_body_is_400(client: TestClient) -> None:
    error = assert_openai_error(client.post(CHAT, json=[1, 2]), 400)

    assert "must be a JSON object" in error["message"]


def test_unknown_model_is_404_listing_served_models(client: TestClient, engine: FakeEngine) -> None:
    error = assert_openai_error(client.post(CHAT, json=body(model="gpt-5")), 404)

    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "gpt-5" in error["message"]
    assert MODEL in error["message"]
    assert engine.requests == []


def test_routes_by_model(client: TestClient, engine: FakeEngine) -> None:
    response = client.post(CHAT, json=body(model="other-model"))

    assert response.json()["model"] == "other-model"
    assert engine.requests == []


def test_engine_context_error_is_400_context_length_exceeded(
    client: TestClient, engine: FakeEngine
) -> None:
    engine.raise_next = ContextLengthExceededError("maximum context length is 128 tokens")

    error = assert_openai_error(client.post(CHAT, json=body()), 400)

    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert "128" in error["message"]


def test_engine_bug_is_500_in_openai_shape(client: TestClient, engine: FakeEngine) -> None:
    engine.raise_next = RuntimeError("kaboom")

    error = assert_openai_error(client.post(CHAT, json=body()), 500)

    assert error["type"] == "server_error"


def test_unknown_url_is_404_in_openai_shape(client: TestClient) -> None:
    error = assert_openai_error(client.get("/v1/nothing-here"), 404)

    assert error["code"] == "unknown_url"


def test_health_reports_models_and_fails_when_an_engine_is_down(
    client: TestClient, engine: FakeEngine
) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": [MODEL, "other-model"]}

    engine.healthy = False
    error = assert_openai_error(client.get("/health"), 503)
    assert error["code"] == "model_unavailable"


class TestApiKeys:
    @pytest.fixture
    def client(self, engine: FakeEngine) -> Iterator[TestClient]:
        app = create_app(EngineBackend([engine]), api_keys=["sk-one", "sk-two"])
        with TestClient(app) as test_client:
            yield test_client

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic sk-one"}],
        ids=["missing", "wrong-key", "wrong-scheme"],
    )
    def test_without_a_valid_key_is_401(
        self, client: TestClient, engine: FakeEngine, headers: dict[str, str]
    ) -> None:
        for response in (
            client.post(CHAT, json=body(), headers=headers),
            client.get("/v1/models", headers=headers),
        ):
            error = assert_openai_error(response, 401)
            assert error["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        assert engine.requests == []

    def test_any_configured_key_is_accepted(self, client: TestClient) -> None:
        for key in ("sk-one", "sk-two"):
            response = client.post(CHAT, json=body(), headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text

    def test_health_needs_no_key(self, client: TestClient) -> None:
        assert client.get("/health").status_code == 200


def test_api_error_survives_a_report_round_trip() -> None:
    original = ContextLengthExceededError("too long")

    rebuilt = APIError.from_report(
        APIErrorReport.model_validate_json(original.to_report().model_dump_json())
    )

    assert (rebuilt.status_code, rebuilt.code, rebuilt.param, rebuilt.error_type) == (
        400,
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
    )
    assert rebuilt.message == "too long"


class _FakeMethod:
    def __init__(self, result: object) -> None:
        self.result = result

    async def _resolve(self) -> object:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def remote(self, *_: object) -> Any:
        return self._resolve()


class _FakeHandle:
    def __init__(self, result: object) -> None:
        self.chat = _FakeMethod(result)
        self.health = _FakeMethod(result)


def run_on_handle(result: object) -> APIError:
    backend = HandleBackend({MODEL: _FakeHandle(result)})  # type: ignore[dict-item]
    request = ChatCompletionRequest.model_validate(body())
    with pytest.raises(APIError) as caught:
        asyncio.run(backend.chat(request))
    return caught.value


def test_handle_backend_reraises_reports_from_replicas() -> None:
    error = run_on_handle(ContextLengthExceededError("too long").to_report())

    assert error.status_code == 400
    assert error.code == "context_length_exceeded"


def test_handle_backend_reports_a_replica_bug_without_its_traceback() -> None:
    from ray.exceptions import RayTaskError

    error = run_on_handle(RayTaskError("chat", "Traceback: secret/path.py", ValueError("bad")))

    assert (error.status_code, error.code) == (500, "engine_error")
    assert "ValueError: bad" in error.message
    assert "secret" not in error.message


def test_handle_backend_health_raises_the_replica_report() -> None:
    backend = HandleBackend(
        {MODEL: _FakeHandle(ModelUnavailableError("closed").to_report())}  # type: ignore[dict-item]
    )

    with pytest.raises(APIError) as caught:
        asyncio.run(backend.check_health())

    assert caught.value.status_code == 503


class CallsATool(FakeEngine):
    """Answers every request with one call of ``add``."""

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(request)
        call = ToolCall(id="call_1", function=FunctionCall(name="add", arguments='{"a": 1}'))
        return ChatCompletionResponse(
            model=self.model_id,
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content=None, tool_calls=[call]),
                    finish_reason="tool_calls",
                )
            ],
            usage=CompletionUsage(prompt_tokens=7, completion_tokens=9, total_tokens=16),
        )


def test_tool_call_reply_has_openai_shape() -> None:
    engine = CallsATool()
    with TestClient(create_app(EngineBackend([engine]))) as test_client:
        response = test_client.post(CHAT, json=body(tools=[TOOL], tool_choice="required"))

    assert response.status_code == 200, response.text
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1}'},
            }
        ],
    }
    [request] = engine.requests
    assert request.tool_call_required
    assert [f.name for f in request.active_tools] == ["add"]


def test_streamed_tool_call_is_one_tool_calls_chunk() -> None:
    with TestClient(create_app(EngineBackend([CallsATool()]))) as test_client:
        response = test_client.post(CHAT, json=body(tools=[TOOL], stream=True))

    *chunks, done = sse_events(response)
    assert done == "[DONE]"
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1}'},
            }
        ]
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_history_is_accepted(client: TestClient, engine: FakeEngine) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]

    response = client.post(CHAT, json=body(messages=history, tools=[TOOL]))

    assert response.status_code == 200, response.text
    assert "tool_calls" not in response.json()["choices"][0]["message"]
    assert [m.role for m in engine.requests[0].messages] == ["user", "assistant", "tool"]
