"""Embeddings: the sentence-transformers engine with the bundled MiniLM, and the HTTP route."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from protocols import ConfigurationError
from serve import (
    ContextLengthExceededError,
    EmbeddingRequest,
    EngineBackend,
    InvalidRequestError,
    SentenceTransformersEngine,
    SentenceTransformersSettings,
    bundled_embedding_model_path,
    create_app,
)

if importlib.util.find_spec("sentence_transformers") is None:
    pytest.skip("sentence-transformers (local extra) is not installed", allow_module_level=True)

MODEL = "minilm"


@pytest.fixture(scope="module")
def engine() -> Iterator[SentenceTransformersEngine]:
    engine = SentenceTransformersEngine(SentenceTransformersSettings(name=MODEL, max_inputs=4))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def client(engine: SentenceTransformersEngine) -> Iterator[TestClient]:
    with TestClient(create_app(EngineBackend([engine]))) as test_client:
        yield test_client


def embed(engine: SentenceTransformersEngine, **fields: Any) -> Any:
    request = EmbeddingRequest.model_validate({"model": MODEL, **fields})
    return asyncio.run(engine.embed(request))


def test_bundled_model_is_a_local_directory() -> None:
    assert (bundled_embedding_model_path() / "modules.json").is_file()


def test_missing_model_directory_is_a_configuration_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        SentenceTransformersEngine(SentenceTransformersSettings(path=str(tmp_path / "nope")))


def test_vectors_are_normalised_and_similar_texts_are_close(
    engine: SentenceTransformersEngine,
) -> None:
    response = embed(engine, input=["a cat sat on the mat", "a kitten sits on a rug", "tax law"])

    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.usage.prompt_tokens == response.usage.total_tokens > 6


def test_base64_is_little_endian_float32_of_the_same_vector(
    engine: SentenceTransformersEngine,
) -> None:
    floats = embed(engine, input="hello world").data[0].embedding
    encoded = embed(engine, input="hello world", encoding_format="base64").data[0].embedding

    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.allclose(decoded, floats, atol=1e-6)


def test_too_many_inputs_is_a_bad_request(engine: SentenceTransformersEngine) -> None:
    with pytest.raises(InvalidRequestError, match="at most 4") as caught:
        embed(engine, input=["x"] * 5)

    assert caught.value.param == "input"


def test_too_long_input_says_the_limit(engine: SentenceTransformersEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match="254 tokens") as caught:
        embed(engine, input=["short", "word " * 400])

    assert caught.value.param == "input"
    assert "input[1]" in caught.value.message


def test_chat_on_an_embeddings_model_is_a_bad_request(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_supported"


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"model": MODEL, "input": ""}, 400, "input", "empty string"),
        ({"model": MODEL, "input": []}, 400, "input", "at least one text"),
        ({"model": MODEL, "input": ["ok", ""]}, 400, "input", "input[1] is an empty string"),
        ({"model": MODEL, "input": [1, 2]}, 400, "input", "valid string"),
        (
            {"model": MODEL, "input": "x", "encoding_format": "hex"},
            400,
            "encoding_format",
            "'base64'",
        ),
        ({"model": MODEL, "input": "x", "dimensions": 8}, 400, "dimensions", "not supported"),
        ({"model": MODEL}, 400, "input", "Field required"),
        ({"model": "nope", "input": "x"}, 404, "model", "does not exist"),
    ],
)
def test_bad_embeddings_requests(
    client: TestClient, body: dict[str, Any], status: int, param: str, fragment: str
) -> None:
    response = client.post("/v1/embeddings", json=body)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert fragment in error["message"]


def test_request_input_validation_without_http() -> None:
    with pytest.raises(ValidationError, match="at least one text"):
        EmbeddingRequest(model=MODEL, input=[])
