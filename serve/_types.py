"""Wire models of the OpenAI chat API, the subset this app serves.

Requests forbid unknown fields: a parameter we would silently ignore (``tools``, ``logprobs``...)
is answered with a 400 that names it, so a client never believes it got what it asked for.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class ChatMessage(BaseModel):
    """One message of the conversation; content is plain text in this version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role = Field(description="Who wrote the message.")
    content: str = Field(description="The message text.")
    name: str | None = Field(default=None, description="Optional author name (ignored).")


class TextResponseFormat(BaseModel):
    """Free text output (the default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text"] = Field(description="Discriminator.")


class JsonObjectResponseFormat(BaseModel):
    """Any syntactically valid JSON value, enforced by a JSON grammar."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["json_object"] = Field(description="Discriminator.")


class JsonSchemaSpec(BaseModel):
    """A named JSON schema the output must satisfy (constrained decoding)."""

    # `schema` shadows a BaseModel attribute, so the field is `schema_` with the wire name as alias.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Name of the schema (letters, digits, `_`, `-`).",
    )
    description: str | None = Field(default=None, description="What the output is for.")
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="The JSON schema of the output."
    )
    strict: bool | None = Field(
        default=None, description="Accepted for compatibility; the grammar is always strict."
    )


class JsonSchemaResponseFormat(BaseModel):
    """Output constrained to a JSON schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["json_schema"] = Field(description="Discriminator.")
    json_schema: JsonSchemaSpec = Field(description="The schema and its name.")


ResponseFormat = Annotated[
    TextResponseFormat | JsonObjectResponseFormat | JsonSchemaResponseFormat,
    Field(discriminator="type"),
]


class StreamOptions(BaseModel):
    """Options of a streamed completion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    include_usage: bool = Field(
        default=False, description="Send a last chunk with `usage` and no choices."
    )


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="Id of a served model (see `/v1/models`).")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Completion token limit (legacy name)."
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="Completion token limit; wins over `max_tokens`."
    )
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; 0 is greedy. Default 1."
    )
    top_p: float | None = Field(
        default=None, ge=0, le=1, description="Nucleus sampling mass. Default 1."
    )
    stop: str | list[str] | None = Field(
        default=None, description="Up to 4 sequences that end the completion."
    )
    seed: int | None = Field(default=None, description="Sampler seed for reproducible output.")
    n: int | None = Field(default=None, description="Number of choices; only 1 is supported.")
    stream: bool | None = Field(
        default=None, description="Send the reply as server-sent events, token by token."
    )
    stream_options: StreamOptions | None = Field(
        default=None, description="Streaming options; only with `stream=true`."
    )
    presence_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Penalty on tokens already present."
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Penalty proportional to token frequency."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="`text`, `json_object`, or `json_schema` output."
    )
    user: str | None = Field(default=None, description="End-user id (recorded nowhere yet).")
    logprobs: bool | None = Field(
        default=None, description="Token log probabilities; not supported, only false."
    )

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError(f"at most 4 stop sequences are allowed, got {len(stop)}")
        if isinstance(stop, list) and any(not sequence for sequence in stop):
            raise ValueError("stop sequences must not be empty")
        return stop

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError(f"only n=1 is supported, got n={n}")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("logprobs are not supported; send false or leave it out")
        return logprobs

    @field_validator("stream_options")
    @classmethod
    def _options_need_stream(
        cls, options: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        if options is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream=true")
        return options

    @property
    def completion_limit(self) -> int | None:
        """Requested completion token limit, ``max_completion_tokens`` first; None if unset."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def stop_sequences(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class AssistantMessage(BaseModel):
    """The generated message."""

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] = Field(default="assistant", description="Always `assistant`.")
    content: str = Field(description="Generated text.")


class ChatCompletionChoice(BaseModel):
    """One generated alternative (always exactly one here)."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(default=0, description="Position among the choices.")
    message: AssistantMessage = Field(description="The generated message.")
    finish_reason: FinishReason = Field(
        description="`stop` at a natural end or stop sequence, `length` at the token limit."
    )
    logprobs: None = Field(default=None, description="Not supported; always null.")


class CompletionUsage(BaseModel):
    """Token accounting for one request."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(ge=0, description="Tokens of the formatted prompt.")
    completion_tokens: int = Field(ge=0, description="Tokens generated.")
    total_tokens: int = Field(ge=0, description="Sum of the two.")


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


class ChatCompletionResponse(BaseModel):
    """``POST /v1/chat/completions`` answer."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=_completion_id, description="Completion id.")
    object: Literal["chat.completion"] = Field(
        default="chat.completion", description="Object type."
    )
    created: int = Field(default_factory=_now, description="Unix time of creation.")
    model: str = Field(description="Model that produced the completion.")
    choices: list[ChatCompletionChoice] = Field(description="The single choice.")
    usage: CompletionUsage = Field(description="Token accounting.")
    system_fingerprint: str | None = Field(default=None, description="Not tracked; null.")


class ChunkDelta(BaseModel):
    """What a stream chunk adds to the message."""

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] | None = Field(default=None, description="Set on the first chunk.")
    content: str | None = Field(default=None, description="Text added by this chunk.")


class ChunkChoice(BaseModel):
    """The choice a stream chunk belongs to."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(default=0, description="Position among the choices.")
    delta: ChunkDelta = Field(description="What this chunk adds.")
    finish_reason: FinishReason | None = Field(
        default=None, description="Set on the last chunk of the choice."
    )
    logprobs: None = Field(default=None, description="Not supported; always null.")


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed ``POST /v1/chat/completions``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Completion id, the same on every chunk of one completion.")
    object: Literal["chat.completion.chunk"] = Field(
        default="chat.completion.chunk", description="Object type."
    )
    created: int = Field(description="Unix time of creation, the same on every chunk.")
    model: str = Field(description="Model that produced the completion.")
    choices: list[ChunkChoice] = Field(description="One choice; empty on the usage chunk.")
    usage: CompletionUsage | None = Field(
        default=None, description="Only on the last chunk, when `include_usage` was asked for."
    )
    system_fingerprint: str | None = Field(default=None, description="Not tracked; null.")

    def to_sse(self) -> str:
        """This chunk as one server-sent event."""
        payload = self.model_dump(mode="json")
        if payload["usage"] is None:
            del payload["usage"]
        # OpenAI sends only what a delta adds: `{"content": "..."}`, and `{}` at the end.
        for choice in payload["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def response_chunks(response: ChatCompletionResponse) -> list[ChatCompletionChunk]:
    """A whole completion as the chunks a stream of it would carry (role, text, finish, usage)."""
    [choice] = response.choices

    def chunk(
        choices: list[ChunkChoice], usage: CompletionUsage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=response.id,
            created=response.created,
            model=response.model,
            choices=choices,
            usage=usage,
        )

    return [
        chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))]),
        chunk([ChunkChoice(delta=ChunkDelta(content=choice.message.content))]),
        chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=choice.finish_reason)]),
        chunk([], usage=response.usage),
    ]


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Model id to send as `model`.")
    object: Literal["model"] = Field(default="model", description="Object type.")
    created: int = Field(description="Unix time the app started serving it.")
    owned_by: str = Field(default="troupe", description="Owner shown to clients.")


class ModelList(BaseModel):
    """``GET /v1/models`` answer."""

    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = Field(default="list", description="Object type.")
    data: list[ModelCard] = Field(description="Served models.")
