"""Test doubles: model clients that follow a script or a function, and nothing else."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from agents import ModelEndpoint, ModelReply, ModelRequest, ModelToolCall
from protocols import AgentError

Reply = str | dict[str, Any] | ModelReply
Scripted = Reply | tuple[str, Reply] | Callable[[ModelRequest], Reply]


def tool_calls(*calls: tuple[str, dict[str, Any] | str]) -> ModelReply:
    """A reply that calls tools: ``(name, arguments)`` pairs (a dict is sent as JSON text)."""
    made = tuple(
        ModelToolCall(
            id=f"call_{i}",
            name=name,
            arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
        for i, (name, arguments) in enumerate(calls)
    )
    return ModelReply(content="", finish_reason="tool_calls", tool_calls=made)


def _reply(reply: Reply) -> ModelReply:
    if isinstance(reply, ModelReply):
        return ModelReply(
            content=reply.content,
            prompt_tokens=reply.prompt_tokens or 10,
            completion_tokens=reply.completion_tokens or 5,
            finish_reason=reply.finish_reason,
            tool_calls=reply.tool_calls,
        )
    content = json.dumps(reply) if isinstance(reply, dict) else reply
    return ModelReply(content=content, prompt_tokens=10, completion_tokens=len(content))


class ScriptedModelClient:
    """Answers model calls from a script, in order; any call beyond the script fails the test.

    A script entry is the reply (a dict is sent as JSON; a ``ModelReply``, e.g. from
    ``tool_calls``, as it is), a ``(schema_name, reply)`` pair that also checks which
    structured output was asked for, or a function of the request.
    """

    def __init__(self, *script: Scripted):
        self._script: deque[Scripted] = deque(script)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if not self._script:
            last = request.messages[-1]["content"][:300]
            raise AssertionError(
                f"unexpected model call #{len(self.requests)} ({request.schema_name}): {last!r}"
            )
        entry = self._script.popleft()
        if isinstance(entry, tuple):
            expected, entry = entry
            assert request.schema_name == expected, (
                f"call #{len(self.requests)} asked for {request.schema_name!r}, "
                f"the script expected {expected!r}"
            )
        return _reply(entry(request) if callable(entry) else entry)

    def assert_complete(self) -> None:
        """Fails when part of the script was never used."""
        assert not self._script, f"{len(self._script)} scripted repl(ies) never requested"


class FunctionModelClient:
    """Answers every model call with a function of the request (for logic, not sequencing)."""

    def __init__(self, fn: Callable[[ModelRequest], Reply]):
        self._fn = fn
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        reply = self._fn(request)
        if isinstance(reply, ModelReply):
            return reply
        content = json.dumps(reply) if isinstance(reply, dict) else reply
        return ModelReply(content=content)


class UnavailableModelClient:
    """A model endpoint that is down: every call fails as the openai client's would."""

    def __init__(self, code: str = "model_unavailable"):
        self.code = code
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        raise AgentError(f"endpoint down ({self.code})", code=self.code, retryable=True)


def unavailable_client(endpoint: ModelEndpoint) -> UnavailableModelClient:
    """``ModelEndpoint.client`` factory of an endpoint that is down."""
    return UnavailableModelClient()


def echo_client(endpoint: ModelEndpoint) -> FunctionModelClient:
    """``ModelEndpoint.client`` factory: answers ``{"answer": "<model> says hi"}``."""
    return FunctionModelClient(lambda request: {"answer": f"{endpoint.model} says hi"})
