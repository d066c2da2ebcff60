"""The vLLM engine: a chat model on GPUs, batched by vLLM's ``AsyncLLMEngine``.

vLLM is optional (its wheels are CUDA-only): this module imports it only when an engine is built,
and ``require_vllm`` turns its absence into a ``ConfigurationError`` at deploy time. vLLM batches
concurrent requests itself, so unlike llama.cpp there is no lock here. ``response_format`` is
enforced by vLLM's structured outputs (constrained decoding, ``json`` / ``json_object``). Tools are
refused with a 400: no grammar for the tool-call envelope is wired to vLLM yet.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from protocols import ConfigurationError
from serve._engine import Engine, completion_budget
from serve._errors import EngineFailedError, InvalidRequestError
from serve._settings import VllmSettings
from serve._types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    FinishReason,
    JsonObjectResponseFormat,
    JsonSchemaResponseFormat,
)

VLLM_PACKAGE = "vllm"


def _missing(settings: VllmSettings) -> ConfigurationError:
    return ConfigurationError(
        f"model {settings.name!r} uses engine 'vllm', but the package `vllm` is not installed: "
        "pip install vllm (CUDA-only wheels) where the replicas run, and keep num_gpus >= 1 "
        f"(it is {settings.num_gpus}) so Ray places them on GPU nodes; or choose engine "
        "'transformers' or 'llama_cpp' for CPU"
    )


def require_vllm(settings: VllmSettings) -> None:
    """Raises ``ConfigurationError`` when vLLM cannot be imported here (checked without importing).

    Raises:
        ConfigurationError: ``vllm`` is not installed; the message names the package and the
            ``num_gpus`` the model needs.
    """
    try:
        found = importlib.util.find_spec(VLLM_PACKAGE) is not None
    except ValueError:  # in sys.modules without a spec (injected): it is importable
        found = True
    if not found:
        raise _missing(settings)


def _import_vllm(settings: VllmSettings) -> ModuleType:
    try:
        return importlib.import_module(VLLM_PACKAGE)
    except ImportError as error:
        raise _missing(settings) from error


@dataclass(frozen=True)
class _Prepared:
    prompt_ids: list[int]
    params: Any  # vllm.SamplingParams


class VllmEngine(Engine):
    """A chat model served by vLLM's ``AsyncLLMEngine`` on the replica's GPUs.

    Args:
        settings: Model directory, parallelism, memory share, context length, dtype and seed.

    Raises:
        ConfigurationError: vLLM is not installed.
    """

    def __init__(self, settings: VllmSettings) -> None:
        self._vllm = _import_vllm(settings)
        args = self._vllm.AsyncEngineArgs(
            model=settings.path,
            tensor_parallel_size=settings.tensor_parallel_size,
            dtype=settings.dtype,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=settings.max_model_len,
            seed=settings.seed,
        )
        self._engine: Any = self._vllm.AsyncLLMEngine.from_engine_args(args)
        self._model_id = settings.name
        self._max_len = settings.max_model_len
        self._tokenizer: Any = None

    @property
    def model_id(self) -> str:
        """Model id the engine serves."""
        return self._model_id

    @property
    def context_size(self) -> int:
        """Context window in tokens (0 until the engine has reported it, if not configured)."""
        return self._max_len or 0

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Generates one reply (vLLM batches it with other requests in flight)."""
        prepared = await self._prepare(request)
        final: Any = None
        async for output in self._generate(prepared):
            final = output
        if final is None:
            raise EngineFailedError(f"vLLM returned nothing for model {self._model_id!r}")
        out = final.outputs[0]
        return ChatCompletionResponse(
            model=self._model_id,
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content=out.text),
                    finish_reason=_finish_reason(out.finish_reason),
                )
            ],
            usage=_usage(len(prepared.prompt_ids), len(out.token_ids)),
        )

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streams one reply; request errors are raised before the first chunk."""
        prepared = await self._prepare(request)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> Any:
            return ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=self._model_id,
                choices=choices,
                usage=usage,
            )

        yield chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
        sent, out = "", None
        async for output in self._generate(prepared):
            out = output.outputs[0]
            if len(out.text) > len(sent):  # vLLM reports the text so far (cumulative)
                yield chunk([ChunkChoice(delta=ChunkDelta(content=out.text[len(sent) :]))])
                sent = out.text
        if out is None:
            raise EngineFailedError(f"vLLM returned nothing for model {self._model_id!r}")
        reason = _finish_reason(out.finish_reason)
        yield chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=reason)])
        yield chunk([], usage=_usage(len(prepared.prompt_ids), len(out.token_ids)))

    def check_health(self) -> None:
        """Raises when vLLM reports its engine dead."""
        if getattr(self._engine, "errored", False):
            raise EngineFailedError(f"vLLM engine of model {self._model_id!r} has failed")

    async def _generate(self, prepared: _Prepared) -> AsyncIterator[Any]:
        """vLLM's outputs for one request; aborts it there if the caller stops early."""
        request_id = uuid.uuid4().hex
        finished = False
        try:
            async for output in self._engine.generate(
                {"prompt_token_ids": prepared.prompt_ids}, prepared.params, request_id
            ):
                finished = bool(output.finished)
                yield output
        finally:
            if not finished:
                await self._engine.abort(request_id)

    async def _prepare(self, request: ChatCompletionRequest) -> _Prepared:
        if request.active_tools:
            raise InvalidRequestError(
                "tools are not supported by the vllm engine yet; serve a llama_cpp model for "
                "tool calls, or send tool_choice 'none'",
                param="tools",
                code="tools_not_supported",
            )
        if self._tokenizer is None:
            self._tokenizer = await self._engine.get_tokenizer()
        if self._max_len is None:
            self._max_len = int((await self._engine.get_model_config()).max_model_len)
        messages = [{"role": m.role, "content": m.content or ""} for m in request.messages]
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        prompt_ids = list(self._tokenizer.encode(text, add_special_tokens=False))
        max_tokens = completion_budget(self._max_len, len(prompt_ids), request.completion_limit)
        return _Prepared(prompt_ids, sampling_params(self._vllm, request, max_tokens=max_tokens))


def sampling_params(vllm: ModuleType, request: ChatCompletionRequest, *, max_tokens: int) -> Any:
    """vLLM ``SamplingParams`` for ``request``, with structured outputs for ``response_format``.

    Uses ``structured_outputs=StructuredOutputsParams`` on vLLM releases that have it, else
    ``guided_decoding=GuidedDecodingParams`` (older releases); both constrain decoding.
    """
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_tokens,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "seed": request.seed,
        "stop": request.stop_sequences or None,
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
    }
    match request.response_format:
        case JsonObjectResponseFormat():
            kwargs.update(_structured(vllm, {"json_object": True}))
        case JsonSchemaResponseFormat():
            kwargs.update(_structured(vllm, {"json": request.response_format.json_schema.schema_}))
        case _:
            pass
    return vllm.SamplingParams(**kwargs)


def _structured(vllm: ModuleType, spec: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(f"{vllm.__name__}.sampling_params")
    if hasattr(module, "StructuredOutputsParams"):
        return {"structured_outputs": module.StructuredOutputsParams(**spec)}
    if hasattr(module, "GuidedDecodingParams"):
        return {"guided_decoding": module.GuidedDecodingParams(**spec)}
    raise EngineFailedError(
        "this vLLM has neither StructuredOutputsParams nor GuidedDecodingParams; "
        "response_format cannot be enforced"
    )


def _finish_reason(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
