"""Wire models of the OpenAI chat API, the subset this app serves.

Requests forbid unknown fields: a parameter we would silently ignore (``tools``, ``logprobs``...)
is answered with a 400 that names it, so a client never believes it got what it asked for.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128


class FunctionCall(BaseModel):
    """The function a tool call invokes and its arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Name of the function called.")
    arguments: str = Field(description="Arguments as a JSON object, serialised to a string.")


class ToolCall(BaseModel):
    """A call of one of the request's tools, made by the assistant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Call id; the `tool` message with the result repeats it.")
    type: Literal["function"] = Field(default="function", description="Always `function`.")
    function: FunctionCall = Field(description="Function name and JSON arguments.")


class ChatMessage(BaseModel):
    """One message of the conversation: text, an assistant's tool calls, or a tool's result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role = Field(description="Who wrote the message.")
    content: str | None = Field(
        default=None, description="The message text; may be null on an assistant tool call."
    )
    name: str | None = Field(default=None, description="Optional author name (ignored).")
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Tool calls an earlier assistant turn made."
    )
    tool_call_id: str | None = Field(
        default=None, description="On a `tool` message: the id of the call it answers."
    )

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("only tool messages carry a tool_call_id")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self


class FunctionDefinition(BaseModel):
    """A function the model may call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=FUNCTION_NAME_PATTERN,
        description="Function name (letters, digits, `_`, `-`; at most 64).",
    )
    description: str | None = Field(default=None, description="What the function does.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments object; the grammar enforces it.",
    )
    strict: bool | None = Field(
        default=None, description="Accepted for compatibility; arguments are always constrained."
    )

    @field_validator("parameters")
    @classmethod
    def _parameters_are_an_object(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters.get("type", "object") != "object":
            raise ValueError('the parameters schema must describe an object ("type": "object")')
        return parameters


class ToolDefinition(BaseModel):
    """One entry of ``tools``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["function"] = Field(description="Only function tools exist.")
    function: FunctionDefinition = Field(description="The function.")


class NamedFunction(BaseModel):
    """Which function a named ``tool_choice`` forces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Name of one of the request's tools.")


class NamedToolChoice(BaseModel):
    """``tool_choice`` that forces a call of one named function."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["function"] = Field(description="Always `function`.")
    function: NamedFunction = Field(description="The function to call.")


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


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
    tools: list[ToolDefinition] | None = Field(
        default=None,
        max_length=MAX_TOOLS,
        description="Functions the model may call; calls come back as `tool_calls`.",
    )
    tool_choice: ToolChoice | None = Field(
        default=None,
        description="`none`, `auto` (default with tools), `required`, or one named function.",
    )
    parallel_tool_calls: bool | None = Field(
        default=None, description="Accepted; the model makes at most one call per turn."
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

    @field_validator("tools")
    @classmethod
    def _tools_are_usable(
        cls, tools: list[ToolDefinition] | None, info: ValidationInfo
    ) -> list[ToolDefinition] | None:
        if tools is None:
            return None
        names = [tool.function.name for tool in tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        response_format = info.data.get("response_format")
        if tools and not isinstance(response_format, TextResponseFormat | None):
            raise ValueError(
                "tools cannot be combined with a json_object or json_schema response_format; "
                "send one or the other"
            )
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _choice_names_a_tool(
        cls, choice: ToolChoice | None, info: ValidationInfo
    ) -> ToolChoice | None:
        if choice is None or "tools" not in info.data:  # tools itself failed validation
            return choice
        names = [tool.function.name for tool in info.data["tools"] or []]
        if not names and choice != "none":
            raise ValueError("tool_choice needs tools: send `tools` or leave tool_choice out")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(
                f"tool_choice names the function {choice.function.name!r}, which is not among "
                f"the tools ({', '.join(names)})"
            )
        return choice

    @property
    def active_tools(self) -> list[FunctionDefinition]:
        """Functions the model may call now: none with ``tool_choice`` `none` or no tools."""
        if not self.tools or self.tool_choice == "none":
            return []
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            return [tool.function for tool in self.tools if tool.function.name == name]
        return [tool.function for tool in self.tools]

    @property
    def tool_call_required(self) -> bool:
        """Whether the reply must be a tool call (`required` or a named function)."""
        return bool(self.active_tools) and self.tool_choice not in (None, "auto")

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
    """The generated message: text, or tool calls (then ``content`` is null)."""

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] = Field(default="assistant", description="Always `assistant`.")
    content: str | None = Field(description="Generated text; null when the reply is a tool call.")
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Calls of the request's tools; left out when there are none."
    )

    @model_serializer(mode="wrap")
    def _leave_out_no_tool_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI leaves the key out of plain text replies; some clients echo every key back.
        data: dict[str, Any] = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


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


class ToolCallDelta(BaseModel):
    """A tool call inside a stream chunk; ``index`` says which call of the message it is."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the call in the message's tool_calls.")
    id: str = Field(description="Call id.")
    type: Literal["function"] = Field(default="function", description="Always `function`.")
    function: FunctionCall = Field(description="Function name and JSON arguments.")


class ChunkDelta(BaseModel):
    """What a stream chunk adds to the message."""

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] | None = Field(default=None, description="Set on the first chunk.")
    content: str | None = Field(default=None, description="Text added by this chunk.")
    tool_calls: list[ToolCallDelta] | None = Field(
        default=None, description="Tool calls this chunk adds (whole calls, one chunk each)."
    )


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

    message = choice.message
    body: list[ChatCompletionChunk] = []
    if message.content:
        body.append(chunk([ChunkChoice(delta=ChunkDelta(content=message.content))]))
    for index, call in enumerate(message.tool_calls or []):
        delta = ToolCallDelta(index=index, id=call.id, function=call.function)
        body.append(chunk([ChunkChoice(delta=ChunkDelta(tool_calls=[delta]))]))
    return [
        chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))]),
        *body,
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
