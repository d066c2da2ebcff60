"""Tool calling without a model: request validation, prompt, grammar and reply parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from serve import ChatCompletionRequest
from serve._tools import CALL_CLOSE, CALL_OPEN, parse_reply, prompt_messages, tool_grammar

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
ADD: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        },
    },
}


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize(
    ("choice", "active", "required"),
    [
        (None, ["get_weather", "add"], False),
        ("auto", ["get_weather", "add"], False),
        ("none", [], False),
        ("required", ["get_weather", "add"], True),
        ({"type": "function", "function": {"name": "add"}}, ["add"], True),
    ],
)
def test_tool_choice_decides_which_tools_are_active(
    choice: Any, active: list[str], required: bool
) -> None:
    parsed = request(tools=[WEATHER, ADD], tool_choice=choice)

    assert [f.name for f in parsed.active_tools] == active
    assert parsed.tool_call_required is required


def test_prompt_describes_tools_in_the_system_message() -> None:
    messages = prompt_messages(
        request(
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}],
            tools=[WEATHER],
        )
    )

    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert '"name": "get_weather"' in messages[0]["content"]
    assert CALL_OPEN in messages[0]["content"]


def test_no_tool_text_without_active_tools() -> None:
    messages = prompt_messages(request(tools=[WEATHER], tool_choice="none"))

    assert messages == [{"role": "user", "content": "hi"}]


def test_tool_history_renders_as_plain_turns() -> None:
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rain, 4 C"},
    ]

    messages = prompt_messages(request(messages=history))

    assert messages[1] == {
        "role": "assistant",
        "content": CALL_OPEN
        + '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
        + CALL_CLOSE,
    }
    assert messages[2] == {
        "role": "user",
        "content": "<tool_response>\nrain, 4 C\n</tool_response>",
    }


def test_grammar_wraps_the_call_and_allows_text_only_in_auto() -> None:
    call = 'root ::= "{" space "}"\nspace ::= " "?'

    auto = tool_grammar(call, allow_text=True)
    required = tool_grammar(call, allow_text=False)

    assert auto.startswith(f'root ::= "{CALL_OPEN}" troupe-call "{CALL_CLOSE}" | troupe-text')
    assert 'troupe-call ::= "{" space "}"' in auto
    assert "troupe-text" not in required
    assert required.count("root ::=") == 1


def test_parse_reply_reads_a_call() -> None:
    reply = parse_reply(
        f'{CALL_OPEN}{{"name": "add", "arguments": {{"a": 1, "b": 2}}}} {CALL_CLOSE}',
        finish_reason="stop",
    )

    assert reply.content is None
    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls or []
    assert call.id.startswith("call_")
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 1, "b": 2}


def test_parse_reply_keeps_text_and_drops_a_cut_off_call() -> None:
    assert parse_reply("Sunny.", finish_reason="stop").content == "Sunny."
    cut = parse_reply(f'{CALL_OPEN}{{"name": "add", "argu', finish_reason="length")
    assert (cut.content, cut.tool_calls, cut.finish_reason) == (None, None, "length")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"tool_choice": "auto"}, "tool_choice needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not among the tools",
        ),
        ({"tools": [ADD, ADD]}, "repeated: add"),
        (
            {"tools": [ADD], "response_format": {"type": "json_object"}},
            "cannot be combined",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "no spaces"}}]},
            "pattern",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "must describe an object",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "user"}]}, "needs content"),
    ],
)
def test_bad_tool_requests_are_rejected(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        request(**fields)
