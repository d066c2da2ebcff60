"""The transformers engine: an HF causal LM from a local directory, on CPU or CUDA.

Generation is a plain token loop over the model with its KV cache (greedy at temperature 0, else
temperature + top-p sampling from a seeded ``torch.Generator``), so streaming, stop sequences,
``max_tokens`` and cancellation behave as they do with llama.cpp.

``response_format`` is **validated, not constrained**: the schema is put in the system message,
the reply is generated whole, then parsed (``json_object``) or checked against the schema
(``json_schema``). A reply that fails is answered with a 502 ``response_format_not_met`` error
(retryable), never returned as if it were valid; a model's ``fallbacks`` (e.g. a llama.cpp model,
which constrains decoding) then get the request. Tools are refused with a 400 for the same reason:
without a grammar their arguments could not be guaranteed to parse.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols import ConfigurationError
from serve._engine import completion_budget
from serve._errors import APIError, InvalidRequestError
from serve._llama_cpp import (
    CHATML_TEMPLATE,
    _StopScanner,
)
from serve._serial import Completion, SerialEngine
from serve._settings import TransformersSettings
from serve._types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FinishReason,
    JsonObjectResponseFormat,
    JsonSchemaResponseFormat,
    response_chunks,
)

SCHEMA_PARAM = "response_format.json_schema.schema"


class ResponseFormatNotMetError(APIError):
    """The model's reply did not satisfy ``response_format`` (the engine validates, 502)."""

    default_status_code = 502
    default_error_type = "server_error"
    default_code = "response_format_not_met"
    default_param = "response_format"
    default_retryable = True


@dataclass(frozen=True)
class _Plan:
    """A validated request, ready to generate."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int


class TransformersEngine(SerialEngine):
    """A causal LM run by ``transformers`` in this process, one request at a time.

    A model and its KV cache serve one generation at a time: an ``asyncio.Lock`` admits one
    request, which runs in a thread (``asyncio.to_thread``) so the replica's event loop stays free.
    Parallelism comes from replicas.

    Args:
        settings: Model directory, device, dtype, threads and context size.

    Raises:
        ConfigurationError: The directory is missing, unloadable, or CUDA was asked for and is
            not visible.
    """

    def __init__(self, settings: TransformersSettings) -> None:
        super().__init__()
        import torch
        import transformers

        path = Path(settings.path)
        if not path.is_dir():
            raise ConfigurationError(
                f"model directory not found: {path} (TransformersSettings.path)"
            )
        self._device = _device(settings.device, cuda_available=torch.cuda.is_available())
        if self._device == "cpu":
            torch.set_num_threads(settings.n_threads)
        dtype = _dtype(settings.dtype, self._device)
        try:
            self._tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
                str(path), local_files_only=True
            )
            model: Any = transformers.AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=getattr(torch, dtype)
            )
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"transformers could not load {path}: {error}") from error
        self._model = model.to(self._device).eval()
        self._model_id = settings.name
        self._context = settings.max_context or int(
            getattr(model.config, "max_position_embeddings", 2048)
        )
        self._template = getattr(self._tokenizer, "chat_template", None) or CHATML_TEMPLATE
        self._eos = _eos_ids(self._tokenizer, model)
        self._seeds = random.Random(settings.seed)

    @property
    def model_id(self) -> str:
        """Model id the engine serves."""
        return self._model_id

    @property
    def context_size(self) -> int:
        """Context window in tokens."""
        return self._context

    @property
    def device(self) -> str:
        """Torch device the model runs on (``cpu`` or ``cuda``)."""
        return self._device

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Generates one reply; waits for earlier requests on this engine to finish first."""
        _refuse_tools(request)
        completion = await self._complete(request)
        _check_format(request, completion.text)
        return ChatCompletionResponse(
            model=self._model_id,
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content=completion.text),
                    finish_reason=completion.finish_reason,
                )
            ],
            usage=completion.usage(),
        )

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streams one reply token by token; with a ``response_format``, whole once validated."""
        _refuse_tools(request)
        if request.response_format is not None and request.response_format.type != "text":
            for chunk in response_chunks(await self.chat(request)):
                yield chunk
            return
        async for chunk in self._stream_tokens(request):
            yield chunk

    def check_health(self) -> None:
        """The model lives in this process; if the replica answers, the engine can serve."""

    def _generate_locked(
        self,
        request: ChatCompletionRequest,
        *,
        on_start: Callable[[], None] | None,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event | None,
    ) -> Completion:
        plan = self._plan(request)
        if on_start is not None:
            on_start()
        return self._generate(plan, on_text=on_text, cancelled=cancelled)

    def _plan(self, request: ChatCompletionRequest) -> _Plan:
        """Formats and checks the request; raises ``APIError`` for what the client must fix."""
        messages = [
            {"role": message.role, "content": message.content or ""} for message in request.messages
        ]
        instructions = _format_instructions(request)
        if instructions:
            messages = _with_system(messages, instructions)
        text = self._tokenizer.apply_chat_template(
            messages, chat_template=self._template, tokenize=False, add_generation_prompt=True
        )
        prompt = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        seed = self._seeds.randrange(2**32) if request.seed is None else request.seed % 2**32
        return _Plan(
            prompt=prompt,
            max_tokens=completion_budget(self._context, len(prompt), request.completion_limit),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop_sequences,
            seed=seed,
        )

    def _generate(
        self,
        plan: _Plan,
        *,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event | None,
    ) -> Completion:
        """Samples until an end token, a stop sequence, ``max_tokens`` or cancellation."""
        import torch

        generator = torch.Generator(device=self._device).manual_seed(plan.seed)
        stops = _StopScanner(plan.stop)
        tokens: list[int] = []
        shown = ""  # decoded text already passed to the stop scanner
        parts: list[str] = []
        finish_reason: FinishReason = "length"

        def emit(text: str) -> None:
            if text:
                parts.append(text)
                if on_text is not None:
                    on_text(text)

        inputs = torch.tensor([plan.prompt], device=self._device)
        cache = None
        with torch.inference_mode():
            while len(tokens) < plan.max_tokens:
                if cancelled is not None and cancelled.is_set():
                    break
                out = self._model(input_ids=inputs, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                token = _sample(out.logits[0, -1], plan, generator)
                if token in self._eos:
                    finish_reason = "stop"
                    break
                tokens.append(token)
                inputs = torch.tensor([[token]], device=self._device)
                decoded = self._tokenizer.decode(tokens, skip_special_tokens=True)
                if decoded.endswith("\ufffd"):  # inside a multi-byte character: wait for more
                    continue
                piece, shown = decoded[len(shown) :], decoded
                text, stopped = stops.feed(piece)
                emit(text)
                if stopped:
                    finish_reason = "stop"
                    return Completion("".join(parts), finish_reason, len(plan.prompt), len(tokens))
        decoded = self._tokenizer.decode(tokens, skip_special_tokens=True)
        text, _ = stops.feed(decoded[len(shown) :])
        emit(text + stops.flush())
        return Completion("".join(parts), finish_reason, len(plan.prompt), len(tokens))


def _sample(logits: Any, plan: _Plan, generator: Any) -> int:
    """Next token id: argmax at temperature 0, else temperature and top-p sampling."""
    import torch

    if plan.temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / plan.temperature, dim=-1)
    if plan.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= plan.top_p
        sorted_probs[outside] = 0.0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _device(wanted: str, *, cuda_available: bool) -> str:
    if wanted == "cuda" and not cuda_available:
        raise ConfigurationError(
            "device 'cuda' was asked for but this replica sees no GPU: give the model num_gpus "
            "so Ray places it on a GPU node, and install a CUDA build of torch"
        )
    if wanted == "auto":
        return "cuda" if cuda_available else "cpu"
    return wanted


def _dtype(wanted: str, device: str) -> str:
    if wanted != "auto":
        return wanted
    return "float16" if device == "cuda" else "float32"


def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    """Token ids that end a reply: the tokenizer's EOS and the model's generation EOS."""
    ids: set[int] = set()
    for value in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def _refuse_tools(request: ChatCompletionRequest) -> None:
    if request.active_tools:
        raise InvalidRequestError(
            "tools are not supported by the transformers engine (it cannot constrain decoding, "
            "so call arguments could not be guaranteed to parse); serve this model with "
            "llama_cpp, or send tool_choice 'none'",
            param="tools",
            code="tools_not_supported",
        )


def _format_instructions(request: ChatCompletionRequest) -> str:
    """What the system message says about the output format (validation does the enforcing)."""
    match request.response_format:
        case JsonObjectResponseFormat():
            return "Reply with one JSON object and nothing else."
        case JsonSchemaResponseFormat():
            _check_schema(request.response_format.json_schema.schema_)
            schema = json.dumps(request.response_format.json_schema.schema_)
            return f"Reply with one JSON document following this JSON schema, only that:\n{schema}"
        case _:
            return ""


def _with_system(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _check_schema(schema: dict[str, Any]) -> None:
    import jsonschema  # type: ignore[import-untyped]  # ships with ray; no stubs here

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        raise InvalidRequestError(
            f"{SCHEMA_PARAM} is not a valid JSON schema: {error.message}", param=SCHEMA_PARAM
        ) from error


def _check_format(request: ChatCompletionRequest, text: str) -> None:
    """Raises ``ResponseFormatNotMetError`` when ``text`` does not satisfy the response format."""
    import jsonschema

    match request.response_format:
        case JsonObjectResponseFormat() | JsonSchemaResponseFormat():
            pass
        case _:
            return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResponseFormatNotMetError(
            f"the model's reply is not JSON ({error.msg} at character {error.pos}); this engine "
            "validates response_format instead of constraining decoding, so retry, raise "
            "max_tokens, or use a llama_cpp model"
        ) from None
    if isinstance(request.response_format, JsonObjectResponseFormat):
        if not isinstance(value, dict):
            raise ResponseFormatNotMetError("the model's reply is JSON but not an object; retry")
        return
    schema = request.response_format.json_schema.schema_
    validator = jsonschema.validators.validator_for(schema)(schema)
    problem = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "(root)"
        raise ResponseFormatNotMetError(
            f"the model's reply does not match the schema at {where}: {problem.message}; this "
            "engine validates response_format instead of constraining decoding, so retry or use "
            "a llama_cpp model"
        )
