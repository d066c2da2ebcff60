"""Contract test: the real `openai` client against the real Serve app with llama.cpp."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from serve import ServeSettings

pytestmark = pytest.mark.ray

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "sights": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 2},
    },
    "required": ["city", "sights"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", params=["direct", "proxy"])
def base_url(
    request: pytest.FixtureRequest, serve_base_url: str, serve_settings: ServeSettings
) -> str:
    """Every contract test runs against both ways in: the ingress replica's direct listener (the
    URL ``deploy`` returns) and Serve's HTTP proxy."""
    if request.param == "direct":
        assert serve_base_url != serve_settings.base_url
        return serve_base_url
    return serve_settings.base_url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    # No retries here: a failure must show up as the status the server sent.
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model(serve_settings: ServeSettings) -> str:
    return serve_settings.models[0].name


def test_models_list(client: openai.OpenAI, model: str) -> None:
    assert [card.id for card in client.models.list()] == [
        model,
        "minilm-l6-v2",
        "offline-remote",
    ]


def test_chat_completion(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=12,
        temperature=0,
    )

    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_json_schema_output_validates(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Pick a city and two sights there, as JSON."}],
        max_tokens=120,
        temperature=0.5,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True},
        },
    )

    content = completion.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), SCHEMA)


def test_streamed_chat_completion(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three animals."}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )

    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 4  # token by token through the ingress, not one block
    assert text.strip()
    assert chunks[-1].usage is not None
    assert 1 <= chunks[-1].usage.completion_tokens <= 16
    plain = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three animals."}],
        max_tokens=16,
        temperature=0,
    )
    assert plain.choices[0].message.content == text


def test_abandoned_stream_stops_generating(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a very long story."}],
        max_tokens=900,
        stream=True,
    )
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()

    # The replica serves one request at a time: had the 900 tokens gone on, this would wait
    # behind them (about 10 s here) and usually run into the client timeout below.
    quick = openai.OpenAI(base_url=str(client.base_url), api_key="x", max_retries=0, timeout=5)
    completion = quick.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert completion.choices[0].message.content is not None


def test_deployments_are_healthy(serve_settings: ServeSettings) -> None:
    from ray import serve as ray_serve

    status = ray_serve.status().applications[serve_settings.app_name]

    assert status.status == "RUNNING"
    # One fixed CPU replica each: every model runs in the ingress replica (colocated).
    assert all(model.colocated for model in serve_settings.models)
    assert set(status.deployments) == {"openai-ingress"}
    assert {d.status for d in status.deployments.values()} == {"HEALTHY"}


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )

    assert caught.value.code == "model_not_found"


def test_bad_parameter_is_bad_request(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            temperature=5,
        )

    assert caught.value.param == "temperature"


def test_context_error_from_replica_keeps_its_status(client: openai.OpenAI, model: str) -> None:
    # Raised inside the engine: a 400, not a 500 (test_serve_separate.py: across the Ray hop).
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "word " * 1500}], max_tokens=2
        )

    assert caught.value.code == "context_length_exceeded"


def test_health(base_url: str, model: str) -> None:
    response = httpx.get(base_url.removesuffix("/v1") + "/health", timeout=30)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "models": [model, "minilm-l6-v2", "offline-remote"],
    }


CITY_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("tool_choice", ["required", "named"])
def test_tool_call_arguments_validate(client: openai.OpenAI, model: str, tool_choice: str) -> None:
    choice: Any = tool_choice
    if tool_choice == "named":
        choice = {"type": "function", "function": {"name": "get_weather"}}
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Is it raining in Lisbon?"}],
        tools=[CITY_TOOL],
        tool_choice=choice,
        max_tokens=48,
        temperature=0.7,
        seed=11,
    )

    [result] = completion.choices
    assert result.finish_reason == "tool_calls"
    [call] = result.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY_TOOL["function"]["parameters"])

    # The call and its result go back as history, the way an agent loop sends them.
    follow_up = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": "Is it raining in Lisbon?"},
            result.message,  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
        ],
        tools=[CITY_TOOL],
        max_tokens=12,
        temperature=0,
    )
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_streamed_tool_call(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[CITY_TOOL],
        tool_choice="required",
        max_tokens=48,
        temperature=0,
        stream=True,
    )

    chunks = list(stream)
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    [[call]] = calls
    assert call.function is not None and call.function.name == "get_weather"
    jsonschema.validate(
        json.loads(call.function.arguments or ""), CITY_TOOL["function"]["parameters"]
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_unknown_tool_choice_is_bad_request(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            tools=[CITY_TOOL],
            tool_choice={"type": "function", "function": {"name": "launch_rockets"}},
            max_tokens=4,
        )

    assert caught.value.param == "tool_choice"


def test_embeddings_through_the_openai_client(client: openai.OpenAI) -> None:
    # The client asks for base64 by default and decodes it; floats are asked for explicitly.
    default = client.embeddings.create(model="minilm-l6-v2", input=["red apple", "green pear"])
    floats = client.embeddings.create(
        model="minilm-l6-v2", input="red apple", encoding_format="float"
    )

    assert [len(item.embedding) for item in default.data] == [384, 384]
    assert default.model == "minilm-l6-v2"
    assert default.usage.prompt_tokens > 0
    assert floats.data[0].embedding == pytest.approx(default.data[0].embedding, abs=1e-6)


def test_embeddings_errors(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model="minilm-l6-v2", input="")
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model="minilm-l6-v2", input=["x"] * 17)
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model=model, input="x")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")

    assert empty.value.param == "input"
    assert too_many.value.param == "input"
    assert chat_model.value.code == "model_not_supported"


def test_unreachable_passthrough_falls_back_to_the_local_model(
    client: openai.OpenAI, model: str
) -> None:
    completion = client.chat.completions.create(
        model="offline-remote", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )

    assert completion.model == model
    assert completion.choices[0].message.content is not None
