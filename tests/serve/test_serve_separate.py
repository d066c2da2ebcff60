"""The real Serve app with models in deployments of their own (``colocate: false``).

The session app (``test_serve_ray.py``) runs every model in the ingress replica; this app sends
the chat model's requests across the replica hop, by HTTP and by ``HandleClient``, and mixes in a
colocated model that falls back to the separate one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletion

from serve import HandleClient, LlamaCppSettings, PassthroughSettings, ServeSettings

pytestmark = pytest.mark.ray

CHAT = "separate-chat"
REMOTE = "separate-remote"
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def separate_settings(serve_settings: ServeSettings) -> ServeSettings:
    # Same port: the session's Serve proxy serves every app; a route prefix of its own.
    offline = serve_settings.model("offline-remote")
    assert isinstance(offline, PassthroughSettings)
    return serve_settings.model_copy(
        update={
            "app_name": "troupe-models-separate",
            "route_prefix": "/serve-separate",
            "models": [
                LlamaCppSettings(name=CHAT, n_ctx=1024, n_threads=1, num_cpus=0.25, colocate=False),
                PassthroughSettings(
                    name=REMOTE, base_url=offline.base_url, timeout_s=5, fallbacks=[CHAT]
                ),
            ],
        }
    )


@pytest.fixture(scope="module")
def separate_url(serve_base_url: str, separate_settings: ServeSettings) -> Iterator[str]:
    from serve import deploy, shutdown

    base_url = deploy(separate_settings)
    try:
        yield base_url
    finally:
        shutdown(separate_settings)


@pytest.fixture(scope="module")
def client(separate_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=separate_url, api_key="x", max_retries=0, timeout=60)


def test_only_the_separate_model_has_a_deployment(
    client: openai.OpenAI, separate_settings: ServeSettings
) -> None:
    from ray import serve as ray_serve

    status = ray_serve.status().applications[separate_settings.app_name]

    assert set(status.deployments) == {"openai-ingress", "model-separate-chat"}
    assert [card.id for card in client.models.list()] == [CHAT, REMOTE]


def test_chat_and_stream_across_the_replica_hop(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT, messages=HI, max_tokens=8, temperature=0
    )
    stream = client.chat.completions.create(
        model=CHAT, messages=HI, max_tokens=8, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert completion.model == CHAT
    assert completion.choices[0].message.content
    assert text == completion.choices[0].message.content


def test_replica_errors_keep_their_status(client: openai.OpenAI) -> None:
    # Raised inside the model replica: the 400 crosses the Ray hop as a 400, not a 500.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "word " * 1500}], max_tokens=2
        )

    assert caught.value.code == "context_length_exceeded"


def test_colocated_model_falls_back_to_the_separate_one(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=REMOTE, messages=HI, max_tokens=2)

    assert completion.model == CHAT


def test_handle_client_reaches_both(separate_url: str, separate_settings: ServeSettings) -> None:
    async def run() -> None:
        client = HandleClient(separate_settings)
        direct = await client.chat.completions.create(model=CHAT, messages=HI, max_tokens=3)
        # The colocated passthrough answers through the ingress replica, then falls back.
        fallback = await client.chat.completions.create(model=REMOTE, messages=HI, max_tokens=2)
        assert isinstance(direct, ChatCompletion) and isinstance(fallback, ChatCompletion)
        assert (direct.model, fallback.model) == (CHAT, CHAT)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=CHAT, messages=HI, max_tokens=5000)
        assert caught.value.code == "context_length_exceeded"

    asyncio.run(run())
