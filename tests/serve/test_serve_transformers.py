"""The transformers engine on a tiny random-weight Llama built offline: the contract, not quality.

The tokenizer is a byte-level BPE trained here on a few sentences, with a ChatML template; the
model has one layer of width 16. Its output is gibberish, but token limits, seeds, streaming,
stop sequences, errors and the OpenAI mapping must hold all the same.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from protocols import ConfigurationError
from serve import (
    ChatCompletionRequest,
    ContextLengthExceededError,
    EngineBackend,
    InvalidRequestError,
    ResponseFormatNotMetError,
    ServeSettings,
    TransformersEngine,
    TransformersSettings,
    create_app,
    create_engine,
)
from serve._transformers import _check_format

MODEL = "tiny-llama"
CONTEXT = 96
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = [
    "hello world, the city of lights and the harbour at night",
    '{"city": "Paris", "sights": ["tower", "museum"], "ok": true, "n": null}',
    "system user assistant: answer briefly in plain words",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(TEXTS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> TransformersEngine:
    return TransformersEngine(TransformersSettings(name=MODEL, path=str(model_dir), device="cpu"))


def request(**fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    body.update(fields)
    return ChatCompletionRequest.model_validate(body)


def collect(engine: TransformersEngine, req: ChatCompletionRequest) -> list[Any]:
    async def run() -> list[Any]:
        return [chunk async for chunk in engine.chat_stream(req)]

    return asyncio.run(run())


def test_chat_respects_max_tokens_and_counts_usage(engine: TransformersEngine) -> None:
    response = asyncio.run(engine.chat(request(max_tokens=5, temperature=0)))

    [choice] = response.choices
    assert response.model == MODEL
    assert response.usage.completion_tokens <= 5
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert choice.finish_reason == ("length" if response.usage.completion_tokens == 5 else "stop")
    assert engine.context_size == CONTEXT
    assert engine.device == "cpu"


def test_same_seed_same_sample_and_greedy_is_deterministic(engine: TransformersEngine) -> None:
    def text(**fields: Any) -> str | None:
        return asyncio.run(engine.chat(request(max_tokens=8, **fields))).choices[0].message.content

    assert text(temperature=1.2, top_p=0.9, seed=7) == text(temperature=1.2, top_p=0.9, seed=7)
    assert text(temperature=0) == text(temperature=0)
    samples = {text(temperature=2, seed=seed) for seed in range(4)}
    assert len(samples) > 1  # the seed does reach the sampler


def test_stream_matches_the_plain_completion(engine: TransformersEngine) -> None:
    plain = asyncio.run(engine.chat(request(max_tokens=8, temperature=0)))
    chunks = collect(engine, request(max_tokens=8, temperature=0, stream=True))

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].usage == plain.usage


def test_stop_sequence_cuts_plain_and_streamed_output(engine: TransformersEngine) -> None:
    full = asyncio.run(engine.chat(request(max_tokens=12, temperature=0))).choices[0].message
    assert full.content and len(full.content) > 4
    stop = full.content[2:4]
    cut = asyncio.run(engine.chat(request(max_tokens=12, temperature=0, stop=[stop])))
    streamed = collect(engine, request(max_tokens=12, temperature=0, stop=stop, stream=True))

    expected = full.content[: full.content.index(stop)]
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_prompt_over_the_context_is_a_context_error(engine: TransformersEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match=f"maximum context length is {CONTEXT}"):
        asyncio.run(engine.chat(request(max_tokens=CONTEXT)))


def test_tools_are_refused_naming_the_field(engine: TransformersEngine) -> None:
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(engine.chat(request(tools=[tool])))
    assert caught.value.param == "tools"


def test_json_output_is_validated_not_passed_off(engine: TransformersEngine) -> None:
    fmt = {"type": "json_object"}
    with pytest.raises(ResponseFormatNotMetError) as caught:
        asyncio.run(engine.chat(request(max_tokens=6, temperature=0, response_format=fmt)))
    assert caught.value.status_code == 502
    assert caught.value.retryable  # a fallback model (llama.cpp constrains) gets the request


def test_check_format_accepts_valid_and_names_where_it_fails() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}}
    _check_format(request(response_format=fmt), '{"city": "Paris"}')
    with pytest.raises(ResponseFormatNotMetError, match=r"at city: 3 is not of type 'string'"):
        _check_format(request(response_format=fmt), '{"city": 3}')
    with pytest.raises(ResponseFormatNotMetError, match="not JSON"):
        _check_format(request(response_format={"type": "json_object"}), "city")
    with pytest.raises(ResponseFormatNotMetError, match="not an object"):
        _check_format(request(response_format={"type": "json_object"}), "[1]")


@pytest.fixture(scope="module")
def client(engine: TransformersEngine) -> TestClient:
    return TestClient(create_app(EngineBackend([engine])), raise_server_exceptions=False)


def test_api_chat_and_stream(client: TestClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    response = client.post("/v1/chat/completions", json=body)
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True})

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    assert streamed.status_code == 200
    assert streamed.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("fields", "status", "param", "code"),
    [
        ({"response_format": {"type": "json_object"}}, 502, "response_format", None),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                }
            },
            400,
            "response_format.json_schema.schema",
            None,
        ),
        ({"max_tokens": 500}, 400, "messages", "context_length_exceeded"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "stream": True},
            400,
            "tools",
            "tools_not_supported",
        ),
    ],
)
def test_api_errors_are_openai_shaped(
    client: TestClient, fields: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    response = client.post("/v1/chat/completions", json={**body, **fields})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert json.dumps(error)  # plain JSON, no traceback objects


def test_settings_pick_the_engine_and_guard_cuda(model_dir: Path) -> None:
    settings = ServeSettings.model_validate(
        {"models": [{"engine": "transformers", "name": "t", "path": str(model_dir)}]}
    )
    [model] = settings.models
    assert isinstance(model, TransformersSettings)
    assert isinstance(create_engine(model), TransformersEngine)
    with pytest.raises(ValidationError, match="num_gpus > 0"):
        TransformersSettings(name="t", path=str(model_dir), device="cuda")
    with pytest.raises(ValidationError, match="path"):
        TransformersSettings.model_validate({"name": "t"})


def test_cuda_without_a_visible_gpu_is_a_configuration_error(model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    settings = TransformersSettings(name="t", path=str(model_dir), device="cuda", num_gpus=1)
    with pytest.raises(ConfigurationError, match="num_gpus"):
        TransformersEngine(settings)


def test_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        TransformersEngine(TransformersSettings(name="t", path=str(tmp_path / "nope")))
