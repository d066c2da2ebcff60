"""Passthrough to an external OpenAI-compatible API, and fallbacks between models.

The "remote API" is this app itself (``create_app`` over a scripted engine) served by uvicorn on
127.0.0.1 in a thread: a real HTTP server that speaks the OpenAI API.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serve import (
    APIError,
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionUsage,
    EmbeddingRequest,
    EmbeddingResponse,
    Engine,
    EngineBackend,
    EngineFailedError,
    FallbackBackend,
    InvalidRequestError,
    PassthroughEngine,
    PassthroughSettings,
    create_app,
)
from serve._embedding_types import embedding_response


class RemoteEngine(Engine):
    """The engine behind the stub remote API: answers with its name, or fails as told."""

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id
        self.requests: list[Any] = []
        self.fail_with: Exception | None = None
        self.delay_s = 0.0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_size(self) -> int:
        return 128

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return ChatCompletionResponse(
            model=self._model_id,
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content=f"from {self._model_id}"),
                    finish_reason="stop",
                )
            ],
            usage=CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self.requests.append(request)
        vectors = [[1.0, 0.0]] * len(request.texts)
        return embedding_response(
            vectors,  # type: ignore[arg-type]
            model=self._model_id,
            encoding_format=request.encoding_format,
            tokens=[1] * len(request.texts),
        )

    def check_health(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Remote:
    """A stub OpenAI-compatible server on 127.0.0.1, recording the auth headers it sees."""

    def __init__(self) -> None:
        self.engine = RemoteEngine("remote-model")
        self.authorizations: list[str | None] = []
        app: FastAPI = create_app(EngineBackend([self.engine]))

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            self.authorizations.append(request.headers.get("authorization"))
            return await call_next(request)

        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Remote:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "stub server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    with Remote() as server:
        yield server


@pytest.fixture(autouse=True)
def reset(remote: Remote) -> None:
    remote.engine.fail_with = None
    remote.engine.delay_s = 0.0
    remote.engine.requests.clear()
    remote.authorizations.clear()


def passthrough(base_url: str, **fields: Any) -> PassthroughEngine:
    settings: dict[str, Any] = {
        "name": "gpt-x",
        "base_url": base_url,
        "remote_model": "remote-model",
    }
    settings.update(fields)
    return PassthroughEngine(PassthroughSettings.model_validate(settings))


def chat_request(model: str = "gpt-x", **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def dead_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there


def test_chat_is_forwarded_with_the_key_and_remote_model(remote: Remote) -> None:
    engine = passthrough(remote.base_url, api_key="sk-remote")

    response = asyncio.run(engine.chat(chat_request(max_tokens=7, temperature=0.5)))

    assert response.model == "gpt-x"
    assert response.choices[0].message.content == "from remote-model"
    [sent] = remote.engine.requests
    assert (sent.model, sent.max_tokens, sent.temperature) == ("remote-model", 7, 0.5)
    assert remote.authorizations == ["Bearer sk-remote"]


def test_stream_is_forwarded_chunk_by_chunk(remote: Remote) -> None:
    engine = passthrough(remote.base_url)

    async def collect() -> list[Any]:
        return [chunk async for chunk in engine.chat_stream(chat_request(stream=True))]

    chunks = asyncio.run(collect())

    assert {chunk.model for chunk in chunks} == {"gpt-x"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "from remote-model"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_are_forwarded(remote: Remote) -> None:
    engine = passthrough(remote.base_url)
    request = EmbeddingRequest(model="gpt-x", input=["a", "b"], encoding_format="base64")

    response = asyncio.run(engine.embed(request))

    assert response.model == "gpt-x"
    assert len(response.data) == 2
    assert isinstance(response.data[0].embedding, str)


def test_remote_request_error_keeps_its_status_and_field(remote: Remote) -> None:
    remote.engine.fail_with = InvalidRequestError("bad stop", param="stop")

    with pytest.raises(APIError) as caught:
        asyncio.run(passthrough(remote.base_url).chat(chat_request()))

    assert (caught.value.status_code, caught.value.param) == (400, "stop")
    assert "bad stop" in caught.value.message


@pytest.mark.parametrize("failure", ["5xx", "unreachable", "timeout"])
def test_remote_failures_are_503(remote: Remote, failure: str) -> None:
    url = remote.base_url
    fields: dict[str, Any] = {}
    if failure == "5xx":
        remote.engine.fail_with = EngineFailedError("remote broke")
    elif failure == "unreachable":
        url = dead_url()
    else:
        remote.engine.delay_s = 1.0
        fields["timeout_s"] = 0.2

    with pytest.raises(APIError) as caught:
        asyncio.run(passthrough(url, **fields).chat(chat_request()))

    assert (caught.value.status_code, caught.value.code) == (503, "model_unavailable")
    assert caught.value.retryable


def test_unresolved_key_env_is_refused() -> None:
    from protocols import ConfigurationError

    with pytest.raises(ConfigurationError, match="with_secrets"):
        passthrough("http://127.0.0.1:1/v1", api_key_env="REMOTE_KEY")


@pytest.fixture
def fallback_client(remote: Remote) -> Iterator[TestClient]:
    local = RemoteEngine("local-model")
    engines = [
        passthrough(dead_url(), name="down"),
        passthrough(remote.base_url, name="flaky"),
        local,
    ]
    backend = FallbackBackend(
        EngineBackend(engines), {"down": ["flaky", "local-model"], "flaky": ["local-model"]}
    )
    with TestClient(create_app(backend)) as client:
        yield client


def test_failed_model_falls_back_in_order(fallback_client: TestClient, remote: Remote) -> None:
    first = fallback_client.post("/v1/chat/completions", json=chat_request("down").model_dump())
    remote.engine.fail_with = EngineFailedError("remote broke")
    second = fallback_client.post("/v1/chat/completions", json=chat_request("down").model_dump())

    assert first.status_code == 200, first.text
    assert first.json()["model"] == "flaky"  # `down` is unreachable, `flaky` answered
    assert second.json()["model"] == "local-model"  # and now `flaky` fails too


def test_request_errors_are_not_retried_elsewhere(
    fallback_client: TestClient, remote: Remote
) -> None:
    remote.engine.fail_with = InvalidRequestError("bad stop", param="stop")

    response = fallback_client.post("/v1/chat/completions", json=chat_request("flaky").model_dump())

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"


def test_stream_falls_back_before_its_first_chunk(fallback_client: TestClient) -> None:
    body = chat_request("down", stream=True).model_dump(exclude_none=True)

    response = fallback_client.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    assert '"model":"flaky"' in response.text
    assert response.text.endswith("data: [DONE]\n\n")


def test_embeddings_fall_back(fallback_client: TestClient) -> None:
    response = fallback_client.post("/v1/embeddings", json={"model": "down", "input": "x"})

    assert response.status_code == 200, response.text
    assert response.json()["model"] == "flaky"


def test_fallback_chain(remote: Remote) -> None:
    backend = FallbackBackend(EngineBackend([RemoteEngine("a")]), {"a": ["b", "c"]})

    assert backend.chain("a") == ["a", "b", "c"]
    assert backend.chain("b") == ["b"]
