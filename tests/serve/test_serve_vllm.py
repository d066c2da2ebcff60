"""The vLLM engine without vLLM: settings, the deploy-time check, and the request mapping
against a fake ``vllm`` module put in ``sys.modules``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from protocols import ConfigurationError
from serve import (
    ChatCompletionRequest,
    ContextLengthExceededError,
    InvalidRequestError,
    ServeSettings,
    VllmEngine,
    VllmSettings,
    build_app,
)

REPLY = "Paris is lovely"


class FakeParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeTokenizer:
    def apply_chat_template(self, messages: list[dict[str, str]], **options: Any) -> str:
        assert options == {"tokenize": False, "add_generation_prompt": True}
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        assert not add_special_tokens
        return list(range(len(text.split())))


class FakeAsyncEngine:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.calls: list[tuple[Any, Any, str]] = []
        self.aborted: list[str] = []

    async def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    async def get_model_config(self) -> Any:
        return types.SimpleNamespace(max_model_len=32)

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        self.calls.append((prompt, params, request_id))
        words = REPLY.split()
        for i in range(1, len(words) + 1):
            done = i == len(words)
            out = types.SimpleNamespace(
                text=" ".join(words[:i]),
                token_ids=list(range(i)),
                finish_reason="length" if done else None,
            )
            yield types.SimpleNamespace(outputs=[out], finished=done)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    params_module = types.ModuleType("vllm.sampling_params")
    params_module.StructuredOutputsParams = FakeParams  # type: ignore[attr-defined]
    module.SamplingParams = FakeParams  # type: ignore[attr-defined]
    module.AsyncEngineArgs = dict  # type: ignore[attr-defined]
    module.AsyncLLMEngine = types.SimpleNamespace(from_engine_args=FakeAsyncEngine)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params_module)
    return module


@pytest.fixture
def engine(fake_vllm: types.ModuleType) -> VllmEngine:
    return VllmEngine(VllmSettings(name="big", path="/models/big", max_model_len=None))


def fake(engine: VllmEngine) -> FakeAsyncEngine:
    inner = engine._engine
    assert isinstance(inner, FakeAsyncEngine)
    return inner


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "big", "messages": [{"role": "user", "content": "a b c"}]}
    body.update(fields)
    return ChatCompletionRequest.model_validate(body)


def test_settings_validate_without_vllm_and_need_gpus() -> None:
    settings = ServeSettings.model_validate(
        {"models": [{"engine": "vllm", "name": "big", "path": "/models/big"}]}
    )
    [model] = settings.models
    assert isinstance(model, VllmSettings)
    assert model.num_gpus == 1
    with pytest.raises(ValidationError, match="num_gpus"):
        VllmSettings(name="big", path="/m", num_gpus=0)
    with pytest.raises(ValidationError, match="tensor_parallel_size 2 needs num_gpus >= 2"):
        VllmSettings(name="big", path="/m", tensor_parallel_size=2)


def test_deploying_without_vllm_names_the_package_and_gpus() -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    settings = ServeSettings(models=[VllmSettings(name="big", path="/m", num_gpus=1)])
    with pytest.raises(ConfigurationError, match=r"`vllm` is not installed.*num_gpus >= 1"):
        build_app(settings)


def test_engine_args_come_from_settings(fake_vllm: types.ModuleType) -> None:
    settings = VllmSettings(
        name="big",
        path="/m",
        num_gpus=2,
        tensor_parallel_size=2,
        max_model_len=64,
        dtype="bfloat16",
    )
    args = fake(VllmEngine(settings)).args
    assert args == {
        "model": "/m",
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.9,
        "max_model_len": 64,
        "seed": 0,
    }


def test_request_maps_to_sampling_params_and_token_prompt(engine: VllmEngine) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response = asyncio.run(
        engine.chat(
            request(
                max_tokens=5,
                temperature=0.3,
                top_p=0.8,
                seed=11,
                stop=["END"],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "trip", "schema": schema},
                },
            )
        )
    )

    [(prompt, params, _)] = fake(engine).calls
    assert prompt == {"prompt_token_ids": [0, 1, 2]}  # "<user>a b c<assistant>": 3 words
    structured = params.kwargs.pop("structured_outputs")
    assert structured.kwargs == {"json": schema}
    assert params.kwargs == {
        "n": 1,
        "max_tokens": 5,
        "temperature": 0.3,
        "top_p": 0.8,
        "seed": 11,
        "stop": ["END"],
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    assert response.choices[0].message.content == REPLY
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3
    assert engine.context_size == 32


def test_older_vllm_gets_guided_decoding(
    engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = types.ModuleType("vllm.sampling_params")
    older.GuidedDecodingParams = FakeParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", older)
    asyncio.run(engine.chat(request(response_format={"type": "json_object"})))

    [(_, params, _)] = fake(engine).calls
    assert params.kwargs["guided_decoding"].kwargs == {"json_object": True}


def test_stream_sends_deltas_then_finish_then_usage(engine: VllmEngine) -> None:
    async def run() -> list[Any]:
        return [chunk async for chunk in engine.chat_stream(request(max_tokens=5))]

    chunks = asyncio.run(run())
    texts = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert texts == ["Paris", " is", " lovely"]
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert fake(engine).aborted == []


def test_stream_closed_early_aborts_the_request(engine: VllmEngine) -> None:
    async def run() -> None:
        stream = engine.chat_stream(request())
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.aclose()

    asyncio.run(run())
    [(_, _, request_id)] = fake(engine).calls
    assert fake(engine).aborted == [request_id]


def test_request_errors(engine: VllmEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 32"):
        asyncio.run(engine.chat(request(max_tokens=40)))
    tool = {"type": "function", "function": {"name": "f"}}
    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(engine.chat(request(tools=[tool])))
    assert caught.value.param == "tools"
