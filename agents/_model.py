"""How agents reach a model: one small Protocol, its implementation over the ``openai`` client,
a fallback chain over several endpoints, and a meter that adds up model use.

Retries for model calls live here, in ``OpenAIModelClient`` (tenacity, transport failures only);
the ``openai`` SDK's own retries are off (``max_retries=0``) so two layers never multiply.
``FallbackModelClient`` does not retry: it moves to the next endpoint once one gave up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Required, TypedDict

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from agents._settings import ModelEndpoint
from protocols import AgentError, ConfigurationError, Usage

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(TypedDict, total=False):
    """One OpenAI chat message.

    ``assistant`` messages may carry ``tool_calls`` (OpenAI's wire shape: ``id``, ``type``
    ``function`` and ``function: {name, arguments}``); a ``tool`` message answers one of them by
    ``tool_call_id``.
    """

    role: Required[Role]
    content: Required[str]
    tool_calls: list[dict[str, Any]]
    tool_call_id: str


ToolChoice = Literal["auto", "required", "none"] | dict[str, Any]
"""``auto``, ``required``, ``none``, or ``{"type": "function", "function": {"name": ...}}``."""


@dataclass(frozen=True)
class ModelToolCall:
    """A tool call the model asked for; ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str

    def wire(self) -> dict[str, Any]:
        """The OpenAI shape of this call, for the assistant message that carried it."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def assistant_message(content: str, tool_calls: tuple[ModelToolCall, ...] = ()) -> ChatMessage:
    """The assistant turn to send back with the results of its tool calls."""
    message: ChatMessage = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [call.wire() for call in tool_calls]
    return message


def tool_message(call_id: str, content: str) -> ChatMessage:
    """The result of one tool call, as the model reads it."""
    return {"role": "tool", "tool_call_id": call_id, "content": content}


@dataclass(frozen=True)
class ModelRequest:
    """One chat call: messages, and optionally a JSON schema or tools the answer must follow.

    ``schema`` and ``tools`` are not combined (OpenAI-compatible servers refuse the pair).
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int
    schema: dict[str, Any] | None = None
    schema_name: str = "output"
    temperature: float = 0.0
    seed: int | None = None
    """Sampling seed for this call (None: the endpoint's)."""
    template: str = ""
    """Name@hash of the prompt template that produced the messages, for the trace."""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI function specs (``{"type": "function", "function": {...}}``) the model may call."""
    tool_choice: ToolChoice | None = None
    """Whether the model must call one of ``tools``; None leaves it to the server (auto)."""


@dataclass(frozen=True)
class ModelReply:
    """What the model said (text or tool calls), with token usage."""

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tool_calls: tuple[ModelToolCall, ...] = ()


class ModelClient(Protocol):
    """A chat model. Agents get one in their constructor and never build their own."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Runs one chat completion."""
        ...


_TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError)

FALLBACK_CODES = frozenset({"model_unavailable", "model_unknown"})
"""``AgentError`` codes after which ``FallbackModelClient`` tries the next endpoint."""


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
        """Calls the endpoint, retrying transport failures with backoff.

        Raises:
            AgentError: ``model_unavailable`` (retryable) when transport failures, timeouts or
                5xx outlast the attempts; ``model_unknown`` when the endpoint does not serve
                the model; ``model_rejected`` for any other refusal.
            ConfigurationError: When the endpoint refuses the API key.
        """
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
        except openai.NotFoundError as exc:
            raise AgentError(
                f"model endpoint {self._endpoint.base_url} does not serve model "
                f"{self._endpoint.model!r}: {exc.message}",
                code="model_unknown",
                retryable=False,
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
        if request.tools:
            kwargs["tools"] = list(request.tools)
            if request.tool_choice is not None:
                kwargs["tool_choice"] = request.tool_choice
        response = await self._client.chat.completions.create(
            model=self._endpoint.model,
            messages=list(request.messages),  # type: ignore[arg-type]
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            seed=self._endpoint.seed if request.seed is None else request.seed,
            **kwargs,
        )
        choice = response.choices[0]
        usage = response.usage
        calls = tuple(
            ModelToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
            for c in choice.message.tool_calls or ()
            if c.type == "function"
        )
        return ModelReply(
            content=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
            model=response.model,
            tool_calls=calls,
        )


class FallbackModelClient:
    """Tries model clients in order: the next one when the last failed for good.

    A client fails for good when it raises an ``AgentError`` whose code is in
    ``FALLBACK_CODES`` (its own retries are spent, or it does not serve the model). Any other
    error (a refused request, a bad API key) is raised at once: another endpoint would not fix
    it. Retries stay in each client; this layer only moves on.

    Args:
        clients: ``(label, client)`` pairs, the primary first; labels name them in errors.
    """

    def __init__(self, clients: Sequence[tuple[str, ModelClient]]):
        if not clients:
            raise ConfigurationError("a fallback chain needs at least one model client")
        self._clients = tuple(clients)

    async def complete(self, request: ModelRequest) -> ModelReply:
        """The first reply any client in the chain gives.

        Raises:
            AgentError: ``model_unavailable`` (retryable) naming every failure when all failed.
        """
        failures: list[str] = []
        for label, client in self._clients:
            try:
                return await client.complete(request)
            except AgentError as exc:
                if exc.code not in FALLBACK_CODES:
                    raise
                failures.append(f"{label}: {exc.message}")
        raise AgentError(
            f"every model endpoint failed ({len(failures)}): " + "; ".join(failures),
            code="model_unavailable",
            retryable=True,
        )


class UsageMeter:
    """A ``ModelClient`` wrapper that adds up what the calls through it cost.

    Wrap the agent's client once per handled message (``meter = UsageMeter(self._model)``),
    make every model call of that message through ``meter``, and put ``meter.usage`` on the
    reply. Each completed call adds one model call, its tokens and its request's ``template``
    (``name@hash``; calls without one add nothing there). Calls that raise add nothing.

    Args:
        model: The client that makes the calls.
    """

    def __init__(self, model: ModelClient):
        self._model = model
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        """Model use so far."""
        return self._usage

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Calls the wrapped client and counts the call."""
        reply = await self._model.complete(request)
        self._usage = self._usage + Usage(
            model_calls=1,
            prompt_tokens=max(reply.prompt_tokens, 0),
            completion_tokens=max(reply.completion_tokens, 0),
            templates=(request.template,) if request.template else (),
        )
        return reply


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
