"""``HandleClient``: the ``openai`` interface over handles, without Ray and on the session app."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChunk

from serve import ContextLengthExceededError, EngineBackend, HandleClient, ServeSettings
from tests.serve.test_serve_api import MODEL, FakeEngine

HI = [{"role": "user", "content": "Say hi."}]


def local_client(engine: FakeEngine) -> HandleClient:
    return HandleClient(ServeSettings(), backend=EngineBackend([engine]))


def test_create_returns_openai_types_and_passes_parameters() -> None:
    engine = FakeEngine()
    completion = asyncio.run(
        local_client(engine).chat.completions.create(
            model=MODEL, messages=HI, max_tokens=3, temperature=0, seed=4, timeout=5
        )
    )

    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "hello there"
    [sent] = engine.requests
    assert (sent.max_tokens, sent.temperature, sent.seed) == (3, 0, 4)


def test_stream_yields_openai_chunks_and_usage_only_when_asked() -> None:
    async def run(**options: Any) -> list[OpenAIChunk]:
        stream = await local_client(FakeEngine()).chat.completions.create(
            model=MODEL, messages=HI, stream=True, **options
        )
        return [chunk async for chunk in stream]  # type: ignore[union-attr]

    plain = asyncio.run(run())
    with_usage = asyncio.run(run(stream_options={"include_usage": True}))

    assert all(isinstance(chunk, OpenAIChunk) for chunk in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "hello there"
    assert all(chunk.usage is None for chunk in plain)
    assert with_usage[-1].usage is not None


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"temperature": 9}, openai.BadRequestError, "temperature"),
        ({"n": 2}, openai.BadRequestError, "n"),
        ({"model": "nope"}, openai.NotFoundError, "model"),
    ],
)
def test_bad_requests_raise_the_openai_error_naming_the_field(
    fields: dict[str, Any], error: type[openai.APIStatusError], param: str
) -> None:
    create = local_client(FakeEngine()).chat.completions.create
    with pytest.raises(error) as caught:
        asyncio.run(create(**{"model": MODEL, "messages": HI, **fields}))
    assert caught.value.param == param


def test_engine_errors_keep_their_status() -> None:
    engine = FakeEngine()
    engine.raise_next = ContextLengthExceededError("too long")
    with pytest.raises(openai.BadRequestError) as caught:
        asyncio.run(local_client(engine).chat.completions.create(model=MODEL, messages=HI))
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.status_code == 400


@pytest.mark.ray
def test_on_ray_through_handles(serve_base_url: str, serve_settings: ServeSettings) -> None:
    async def run() -> None:
        client = HandleClient(serve_settings)
        model = serve_settings.models[0].name
        completion = await client.chat.completions.create(
            model=model, messages=HI, max_tokens=6, temperature=0
        )
        assert isinstance(completion, ChatCompletion)
        assert completion.model == model
        assert completion.usage is not None and completion.usage.completion_tokens <= 6

        stream = await client.chat.completions.create(
            model=model, messages=HI, max_tokens=6, temperature=0, stream=True
        )
        text = "".join(
            [c.choices[0].delta.content or "" async for c in stream if c.choices]  # type: ignore[union-attr]
        )
        assert text == completion.choices[0].message.content

        # Fallback: the unreachable passthrough model is answered by the local one.
        fallback = await client.chat.completions.create(
            model="offline-remote", messages=HI, max_tokens=2
        )
        assert isinstance(fallback, ChatCompletion)
        assert fallback.model == model

        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=model, messages=HI, max_tokens=5000)
        assert caught.value.code == "context_length_exceeded"

        vectors = await client.embeddings.create(model="minilm-l6-v2", input=["a", "b"])
        assert [len(item.embedding) for item in vectors.data] == [384, 384]

    asyncio.run(run())
