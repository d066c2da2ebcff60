"""Asking a model for JSON under a bounded schema, and checking what comes back."""

from __future__ import annotations

import json
from typing import Any

from agents._model import ChatMessage, ModelClient, ModelReply, ModelRequest, schema_token_bound
from agents._prompts import Prompt
from protocols import AgentError


def text_field(max_chars: int, *, min_chars: int = 0) -> dict[str, Any]:
    """A bounded string schema: small models only stop cleanly on bounded output."""
    field: dict[str, Any] = {"type": "string", "maxLength": max_chars}
    if min_chars:
        field["minLength"] = min_chars
    return field


def object_schema(properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A closed object schema in which every property is required."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


async def ask_json(
    model: ModelClient,
    *,
    prompt: Prompt,
    system_values: dict[str, str] | None = None,
    user: str,
    schema: dict[str, Any],
    name: str,
    temperature: float = 0.0,
    seed: int | None = None,
    max_tokens: int | None = None,
) -> tuple[dict[str, Any], ModelReply]:
    """One constrained model call; returns the parsed object and the raw reply.

    ``max_tokens`` is the schema's own bound (``schema_token_bound``; pass it when the caller
    has it already), so a valid document is never cut short.
    ``temperature`` and ``seed`` default to greedy decoding with the endpoint's seed.

    Raises:
        AgentError: (retryable) when the output is not a JSON object.
    """
    messages: tuple[ChatMessage, ...] = (
        {"role": "system", "content": prompt.render(**(system_values or {}))},
        {"role": "user", "content": user},
    )
    reply = await model.complete(
        ModelRequest(
            messages=messages,
            max_tokens=schema_token_bound(schema) if max_tokens is None else max_tokens,
            schema=schema,
            schema_name=name,
            template=prompt.version,
            temperature=temperature,
            seed=seed,
        )
    )
    try:
        data = json.loads(reply.content)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise AgentError(
            f"{name}: the model's output is not a JSON object (finish: {reply.finish_reason}): "
            f"{reply.content[:200]!r}",
            code="bad_model_output",
            retryable=True,
        )
    return data, reply


def clip(text: str, limit: int) -> str:
    """Shortens text to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
