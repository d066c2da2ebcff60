"""The llama.cpp engine: a GGUF model run in-process by ``llama-cpp-python``.

One generation loop (``_generate``) serves both plain and streamed completions, so token counts,
stop sequences and finish reasons are the same either way.
"""

from __future__ import annotations

import codecs
import functools
import json
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from protocols import ConfigurationError
from serve._engine import bundled_model_path, completion_budget
from serve._errors import InvalidRequestError, ModelUnavailableError
from serve._serial import Completion, SerialEngine
from serve._settings import LlamaCppSettings
from serve._tools import call_schema, parse_reply, prompt_messages, tool_grammar
from serve._types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FinishReason,
    JsonObjectResponseFormat,
    JsonSchemaResponseFormat,
    ResponseFormat,
    TextResponseFormat,
)

if TYPE_CHECKING:
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# Used when a GGUF file carries no chat template; ChatML is what most small instruct models expect.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SCHEMA_PARAM = "response_format.json_schema.schema"
TOOLS_PARAM = "tools"
# Sampler settings clients cannot set; llama-cpp-python's create_completion defaults.
TOP_K = 40
MIN_P = 0.05


@dataclass(frozen=True)
class _Plan:
    """A validated request, ready to generate."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    stop: list[str]
    seed: int
    grammar: llama_cpp.LlamaGrammar | None


class LlamaCppEngine(SerialEngine):
    """A GGUF model run in-process by llama.cpp (``llama-cpp-python``).

    One ``llama_cpp.Llama`` object is not safe for concurrent calls: it owns a single KV cache and
    sampler state. Requests are therefore serialised: an ``asyncio.Lock`` admits one request at a
    time, and the blocking generation runs in ``asyncio.to_thread`` so the event loop (Serve's
    replica loop) stays responsive. A ``threading.Lock`` guards the model as well, because a
    cancelled request releases the asyncio lock while its thread is still finishing a token.

    Args:
        settings: Which model file, and how many threads and context tokens to use.

    Raises:
        ConfigurationError: The model file is missing or llama.cpp cannot load it.
    """

    def __init__(self, settings: LlamaCppSettings) -> None:
        super().__init__()
        import llama_cpp  # deferred: the `local` extra is optional for everything but serving

        path = Path(settings.path) if settings.path else bundled_model_path()
        if not path.is_file():
            raise ConfigurationError(f"model file not found: {path} (ModelSettings.path)")
        try:
            self._llm: llama_cpp.Llama | None = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=settings.n_ctx,
                n_threads=settings.n_threads,
                seed=settings.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ConfigurationError(f"llama.cpp could not load {path}: {error}") from error
        self._model_id = settings.name
        self._n_ctx = settings.n_ctx
        self._formatter = _chat_formatter(self._llm)
        self._grammars = _Grammars(self._llm)
        # Seeds for requests without one: reproducible per replica from settings.seed.
        self._seeds = random.Random(settings.seed)

    @property
    def model_id(self) -> str:
        """Model id the engine serves."""
        return self._model_id

    @property
    def context_size(self) -> int:
        """Context window in tokens."""
        return self._n_ctx

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Generates one reply; waits for earlier requests on this engine to finish first."""
        completion = await self._complete(request)
        message = AssistantMessage(content=completion.text)
        finish_reason = completion.finish_reason
        if request.active_tools:
            reply = parse_reply(completion.text, finish_reason=completion.finish_reason)
            message = AssistantMessage(content=reply.content, tool_calls=reply.tool_calls)
            finish_reason = reply.finish_reason
        return ChatCompletionResponse(
            model=self._model_id,
            choices=[ChatCompletionChoice(message=message, finish_reason=finish_reason)],
            usage=completion.usage(),
        )

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Generates one reply token by token (see ``Engine.chat_stream`` for the chunk order).

        Closing the stream early (client gone) stops generation at the next token. With tools,
        the reply is generated whole and then sent as chunks (the text, or one chunk per call):
        whether it is a call is only known once it is complete.
        """
        if request.active_tools:
            async for chunk in super().chat_stream(request):
                yield chunk
            return
        async for chunk in self._stream_tokens(request):
            yield chunk

    def check_health(self) -> None:
        """Raises ``ModelUnavailableError`` once the engine has been closed."""
        if self._llm is None:
            raise ModelUnavailableError(f"model {self._model_id!r} is closed")

    def close(self) -> None:
        """Frees the model; the engine answers no more requests afterwards."""
        with self._thread_lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    def _generate_locked(
        self,
        request: ChatCompletionRequest,
        *,
        on_start: Callable[[], None] | None,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event | None,
    ) -> Completion:
        if self._llm is None:
            raise ModelUnavailableError(f"model {self._model_id!r} is closed")
        plan = self._plan(self._llm, request)
        if on_start is not None:
            on_start()
        return _generate(self._llm, plan, on_text=on_text, cancelled=cancelled)

    def _plan(self, llm: llama_cpp.Llama, request: ChatCompletionRequest) -> _Plan:
        """Formats and checks the request; raises ``APIError`` for what the client must fix."""
        # llama-cpp types messages as TypedDicts; ours are plain role/content dicts.
        messages: list[Any] = prompt_messages(request)
        formatted = self._formatter(messages=messages)
        # Same tokenisation as llama-cpp's own chat handler, so the count is exact.
        prompt = llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        seed = self._seeds.randrange(2**32) if request.seed is None else request.seed % 2**32
        return _Plan(
            prompt=prompt,
            max_tokens=completion_budget(self._n_ctx, len(prompt), request.completion_limit),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            stop=request.stop_sequences,
            seed=seed,
            grammar=self._grammars.for_request(request),
        )


def _generate(
    llm: llama_cpp.Llama,
    plan: _Plan,
    *,
    on_text: Callable[[str], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Completion:
    """Samples until end of generation, a stop sequence, or ``plan.max_tokens``."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    # Tokens can end inside a multi-byte character; the decoder holds such bytes back.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = _StopScanner(plan.stop)
    parts: list[str] = []
    completion_tokens = 0
    finish_reason: FinishReason = "length"

    def emit(text: str) -> None:
        if text:
            parts.append(text)
            if on_text is not None:
                on_text(text)

    llm.set_seed(plan.seed)
    for token in llm.generate(
        plan.prompt,
        top_k=TOP_K,
        top_p=plan.top_p,
        min_p=MIN_P,
        temp=plan.temperature,
        repeat_penalty=1.0,
        frequency_penalty=plan.frequency_penalty,
        presence_penalty=plan.presence_penalty,
        grammar=plan.grammar,
    ):
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            finish_reason = "stop"
            break
        completion_tokens += 1
        text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
        emit(text)
        if stopped:
            return Completion(
                text="".join(parts),
                finish_reason="stop",
                prompt_tokens=len(plan.prompt),
                completion_tokens=completion_tokens,
            )
        if completion_tokens >= plan.max_tokens or (cancelled is not None and cancelled.is_set()):
            break
    tail, _ = stops.feed(decoder.decode(b"", final=True))
    emit(tail + stops.flush())
    return Completion(
        text="".join(parts),
        finish_reason=finish_reason,
        prompt_tokens=len(plan.prompt),
        completion_tokens=completion_tokens,
    )


class _StopScanner:
    """Finds stop sequences in text that arrives piece by piece.

    Text that could be the start of a stop sequence is held back until the next piece shows
    whether it is one, so a stream never shows part of a stop sequence.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Adds ``piece``; returns the text now safe to show, and whether a stop ended it."""
        text = self._pending + piece
        hits = [index for stop in self._stops if (index := text.find(stop)) != -1]
        if hits:
            self._pending = ""
            return text[: min(hits)], True
        keep = self._longest_stop_prefix_at_end(text)
        self._pending = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back text, once no more pieces will come."""
        text, self._pending = self._pending, ""
        return text

    def _longest_stop_prefix_at_end(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def _chat_formatter(llm: llama_cpp.Llama) -> Jinja2ChatFormatter:
    """The model's own chat template (ChatML when the file has none), as llama-cpp applies it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE,
        eos_token=_token_text(llm, eos_id),
        bos_token=_token_text(llm, bos_id),
        stop_token_ids=[eos_id] if eos_id != -1 else None,
    )


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    if token == -1:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="ignore")


class _Grammars:
    """Builds, checks and caches the grammars that constrain decoding to an output format.

    Every grammar is parsed by llama.cpp once before use: llama-cpp-python hands an unparsable
    grammar to the sampler chain as a null pointer, which segfaults the process (seen with
    ``{"enum": []}``), so a bad client schema would take the replica down.
    """

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._llm = llm
        # Agents send the same few schemas over and over; converting one is pure Python work.
        self._for_schema = functools.lru_cache(maxsize=64)(self._build_schema_grammar)
        self._for_tools = functools.lru_cache(maxsize=64)(self._build_tool_grammar)
        self._json: llama_cpp.LlamaGrammar | None = None

    def for_request(self, request: ChatCompletionRequest) -> llama_cpp.LlamaGrammar | None:
        """The grammar of the request's tools if any are active, else of its response format."""
        if request.active_tools:
            schema = json.dumps(call_schema(request), sort_keys=True)
            return self._for_tools(schema, not request.tool_call_required)
        return self.for_format(request.response_format)

    def for_format(self, response_format: ResponseFormat | None) -> llama_cpp.LlamaGrammar | None:
        """The grammar for ``response_format``; None for free text."""
        match response_format:
            case None | TextResponseFormat():
                return None
            case JsonObjectResponseFormat():
                if self._json is None:
                    self._json = self._checked(_json_grammar_text(), param="response_format")
                return self._json
            case JsonSchemaResponseFormat():
                return self._for_schema(
                    json.dumps(response_format.json_schema.schema_, sort_keys=True)
                )
            case _:
                assert_never(response_format)

    def _build_schema_grammar(self, schema_json: str) -> llama_cpp.LlamaGrammar:
        text = _schema_gbnf(schema_json, param=SCHEMA_PARAM)
        return self._checked(text, param=SCHEMA_PARAM)

    def _build_tool_grammar(
        self, call_schema_json: str, allow_text: bool
    ) -> llama_cpp.LlamaGrammar:
        text = _schema_gbnf(call_schema_json, param=TOOLS_PARAM)
        return self._checked(tool_grammar(text, allow_text=allow_text), param=TOOLS_PARAM)

    def _checked(self, text: str, *, param: str) -> llama_cpp.LlamaGrammar:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidRequestError(
                f"{param} gives a grammar llama.cpp cannot use (empty or contradictory schema?)",
                param=param,
            )
        llama_cpp.llama_sampler_free(sampler)
        return llama_cpp.LlamaGrammar.from_string(text, verbose=False)


# llama-cpp-python's schema converter lets raw control characters (a newline, say) into JSON
# strings, which no JSON parser accepts; llama.cpp's own converter excludes them, as we do.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def strict_json_strings(grammar: str) -> str:
    """The grammar with JSON string characters limited to what JSON allows unescaped."""
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def _schema_gbnf(schema_json: str, *, param: str) -> str:
    """GBNF of a JSON schema; raises ``InvalidRequestError`` naming ``param`` if unsupported."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        text = json_schema_to_gbnf(schema_json)
    except Exception as error:  # the converter raises bare Exceptions/asserts on bad input
        raise InvalidRequestError(
            f"{param} is not supported: {type(error).__name__}: {error}", param=param
        ) from error
    return strict_json_strings(text)


def _json_grammar_text() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF
