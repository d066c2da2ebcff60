"""Tool calling for engines that generate plain text: prompt, grammar, and parsing of the reply.

A model that was never taught OpenAI's tool format still calls tools reliably when decoding is
constrained. The model sees the tools in its system message and is told to answer either with
text or with ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; the grammar built here
makes that the only possible output:

- ``auto``: either free text (not starting with ``<``) or exactly one tool call;
- ``required`` or a named function: exactly one call, of one of the allowed functions.

Inside the call, ``name`` is one of the allowed names and ``arguments`` follows that function's
parameters schema (llama.cpp's JSON-schema grammar: types, ``required``, ``enum``/``const``,
string lengths, array sizes, nested objects; keywords it ignores such as ``format`` or
``multipleOf`` are not enforced). So the ``arguments`` of every returned call parse as JSON and
fit the schema's structure. A call cut off by ``max_tokens`` is not returned (``finish_reason``
``length``, no ``tool_calls``): a partial call would not parse.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from serve._types import ChatCompletionRequest, ChatMessage, FinishReason, FunctionCall, ToolCall

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# Rule names of our own; the schema converter names its rules after schema paths
# (`alternative-0-...`, `space`, `char`...), which never start with `troupe-`.
_CALL_RULE = "troupe-call"
_TEXT_RULE = "troupe-text"


@dataclass(frozen=True)
class ParsedReply:
    """What a constrained reply said: text, or tool calls, and why it ended."""

    content: str | None
    tool_calls: list[ToolCall] | None
    finish_reason: FinishReason


def call_schema(request: ChatCompletionRequest) -> dict[str, Any]:
    """JSON schema of one call of any of the request's active tools."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": function.name},
                    "arguments": function.parameters,
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for function in request.active_tools
        ]
    }


def tool_grammar(call_grammar: str, *, allow_text: bool) -> str:
    """The whole reply grammar around ``call_grammar`` (a GBNF whose ``root`` is one call)."""
    lines = [
        f"{_CALL_RULE} ::= {line.removeprefix('root ::= ')}"
        if line.startswith("root ::= ")
        else line
        for line in call_grammar.splitlines()
    ]
    call = f'"{CALL_OPEN}" {_CALL_RULE} "{CALL_CLOSE}"'
    if allow_text:
        # Free text may not start with "<", so a reply is unambiguously text or a call.
        root = f"root ::= {call} | {_TEXT_RULE}\n{_TEXT_RULE} ::= [^<\\x00] [^\\x00]*"
    else:
        root = f"root ::= {call}"
    return "\n".join([root, *lines]) + "\n"


def prompt_messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
    """The conversation as plain ``{role, content}`` messages any chat template can render.

    Earlier tool calls become ``<tool_call>`` text in the assistant turn, tool results become
    user turns wrapped in ``<tool_response>``, and the tools (when active) are described in the
    system message.
    """
    messages = [_plain(message) for message in request.messages]
    instructions = _instructions(request)
    if not instructions:
        return messages
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [
            {"role": "system", "content": f"{first['content']}\n\n{instructions}"},
            *messages[1:],
        ]
    return [{"role": "system", "content": instructions}, *messages]


def _plain(message: ChatMessage) -> dict[str, str]:
    if message.role == "tool":
        text = f"<tool_response>\n{message.content}\n</tool_response>"
        return {"role": "user", "content": text}
    content = message.content or ""
    for call in message.tool_calls or []:
        content += _call_text(call.function.name, call.function.arguments)
    return {"role": message.role, "content": content}


def _call_text(name: str, arguments: str) -> str:
    try:
        parsed: Any = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = arguments
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': parsed})}{CALL_CLOSE}"


def _instructions(request: ChatCompletionRequest) -> str:
    functions = request.active_tools
    if not functions:
        return ""
    described = "\n".join(
        json.dumps({"name": f.name, "description": f.description or "", "parameters": f.parameters})
        for f in functions
    )
    how = (
        f'{CALL_OPEN}{{"name": "<function name>", "arguments": {{...}}}}{CALL_CLOSE} '
        "with the arguments as a JSON object."
    )
    if len(functions) == 1 and request.tool_call_required:
        ask = f"Call the function {functions[0].name} now. Reply with {how}"
    elif request.tool_call_required:
        ask = f"Call one of these functions now. Reply with {how}"
    else:
        ask = f"To call a function, reply with only {how} Otherwise answer in plain text."
    return f"You can call these functions:\n{described}\n{ask}"


def parse_reply(text: str, *, finish_reason: FinishReason) -> ParsedReply:
    """Reads a reply generated under ``tool_grammar``.

    Args:
        text: The generated text.
        finish_reason: Why generation ended (``length`` when cut off by the token limit).

    Returns:
        The text, or the one tool call with its arguments re-serialised as compact JSON.
    """
    if not text.startswith(CALL_OPEN):
        return ParsedReply(content=text, tool_calls=None, finish_reason=finish_reason)
    body = text.removeprefix(CALL_OPEN).strip()
    if not body.endswith(CALL_CLOSE):
        # Cut off inside the call: a partial call would not parse, so none is returned.
        return ParsedReply(content=None, tool_calls=None, finish_reason=finish_reason)
    call = json.loads(body.removesuffix(CALL_CLOSE))
    tool_call = ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        function=FunctionCall(name=call["name"], arguments=json.dumps(call["arguments"])),
    )
    return ParsedReply(content=None, tool_calls=[tool_call], finish_reason="tool_calls")
