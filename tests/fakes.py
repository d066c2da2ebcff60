"""Test doubles: model clients that follow a script or a function, and nothing else."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from agents import ModelReply, ModelRequest

Reply = str | dict[str, Any]
Scripted = Reply | tuple[str, Reply] | Callable[[ModelRequest], Reply]


class ScriptedModelClient:
    """Answers model calls from a script, in order; any call beyond the script fails the test.

    A script entry is the reply (a dict is sent as JSON), a ``(schema_name, reply)`` pair that
    also checks which structured output was asked for, or a function of the request.
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
        reply = entry(request) if callable(entry) else entry
        content = json.dumps(reply) if isinstance(reply, dict) else reply
        return ModelReply(content=content, prompt_tokens=10, completion_tokens=len(content))

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
        content = json.dumps(reply) if isinstance(reply, dict) else reply
        return ModelReply(content=content)
