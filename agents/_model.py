"""How agents reach a model: one small Protocol, and its implementation over the ``openai`` client.

Retries for model calls live here, in ``OpenAIModelClient`` (tenacity, transport failures only);
the ``openai`` SDK's own retries are off (``max_retries=0``) so two layers never multiply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from agents._settings import ModelEndpoint
from protocols import AgentError, ConfigurationError

ChatMessage = dict[str, str]


@dataclass(frozen=True)
class ModelRequest:
    """One chat call: messages, and optionally a JSON schema the answer must follow."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    schema: dict[str, Any] | None = None
    schema_name: str = "output"
    temperature: float = 0.0
    template: str = ""
    """Name@hash of the prompt template that produced the messages, for the trace."""


@dataclass(frozen=True)
class ModelReply:
    """What the model said, with token usage."""

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ModelClient(Protocol):
    """A chat model. Agents get one in their constructor and never build their own."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Runs one chat completion."""
        ...


_TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError)


class OpenAIModelClient:
    """A ``ModelClient`` over any OpenAI-compatible endpoint (troupe's Serve app by default)."""

    def __init__(self, endpoint: ModelEndpoint):
        self._endpoint = endpoint
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or "troupe-local",
            timeout=endpoint.timeout_s,
            max_retries=0,  # tenacity below owns retries
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Calls the endpoint, retrying transport failures with backoff."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT),
            stop=stop_after_attempt(self._endpoint.max_attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call(request)
        except _TRANSIENT as exc:
            raise AgentError(
                f"model endpoint {self._endpoint.base_url} failed after "
                f"{self._endpoint.max_attempts} attempt(s): {exc}",
                code="model_unavailable",
                retryable=True,
            ) from None
        except openai.AuthenticationError as exc:
            raise ConfigurationError(
                f"model endpoint {self._endpoint.base_url} refused the API key: {exc.message}"
            ) from None
        except openai.APIStatusError as exc:
            raise AgentError(
                f"model endpoint rejected the request ({exc.status_code}): {exc.message}",
                code="model_rejected",
                retryable=False,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _call(self, request: ModelRequest) -> ModelReply:
        kwargs: dict[str, Any] = {}
        if request.schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": True,
                },
            }
        response = await self._client.chat.completions.create(
            model=self._endpoint.model,
            messages=list(request.messages),  # type: ignore[arg-type]
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            seed=self._endpoint.seed,
            **kwargs,
        )
        choice = response.choices[0]
        usage = response.usage
        return ModelReply(
            content=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
            model=response.model,
        )


def schema_token_bound(schema: dict[str, Any]) -> int:
    """An upper bound on the tokens a JSON document valid under ``schema`` can take.

    Counts one token per character of the largest serialisation, which holds for ASCII text with
    the llama.cpp vocabularies we serve (a token is never shorter than one character there).
    Constrained decoding with a small model only ends cleanly when ``max_tokens`` covers that
    bound; a truncated document does not parse, and the caller asks again.

    Raises:
        ConfigurationError: when a string lacks ``maxLength`` or an array lacks ``maxItems``.
    """
    return _bound(schema, path="$") + 8


def _bound(schema: dict[str, Any], *, path: str) -> int:
    kind = schema.get("type")
    if "anyOf" in schema:
        return max(_bound(s, path=f"{path}|{i}") for i, s in enumerate(schema["anyOf"]))
    if "prefixItems" in schema:
        items = schema["prefixItems"]
        return 2 + sum(_bound(s, path=f"{path}[{i}]") + 2 for i, s in enumerate(items))
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if kind == "string":
        if "maxLength" not in schema:
            raise ConfigurationError(f"schema string at {path} needs maxLength to be bounded")
        return 2 + int(schema["maxLength"])
    if kind == "integer" or kind == "number":
        return 24
    if kind == "boolean":
        return 5
    if kind == "array":
        if schema.get("maxItems") == 0:
            return 2
        if "maxItems" not in schema:
            raise ConfigurationError(f"schema array at {path} needs maxItems to be bounded")
        item = _bound(schema["items"], path=f"{path}[]")
        return 2 + int(schema["maxItems"]) * (item + 2)
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        inner = sum(len(k) + 6 + _bound(v, path=f"{path}.{k}") for k, v in props.items())
        return 2 + inner
    raise ConfigurationError(f"schema at {path} has unsupported type {kind!r}")
