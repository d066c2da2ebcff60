"""Embedders: the cache, the bundled MiniLM, and the OpenAI-compatible client against a stub."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from memory import CachedEmbedder, LocalEmbedder, OpenAIEmbedder
from protocols import ConfigurationError, DeliveryError
from tests.memory.conftest import WordHashEmbedder

Responder = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_cache_embeds_each_text_once(word_embedder: WordHashEmbedder) -> None:
    cached = CachedEmbedder(word_embedder, max_entries=100)
    first = run(cached.embed(["alpha", "beta", "alpha"]))
    assert word_embedder.calls == [["alpha", "beta"]]  # repeats inside a batch are one call
    again = run(cached.embed(["beta", "gamma", "alpha"]))
    assert word_embedder.calls[-1] == ["gamma"]
    assert np.array_equal(again[0], first[1])
    assert np.array_equal(again[2], first[0])
    assert (cached.hits, cached.misses) == (3, 3)
    assert run(cached.embed([])).shape == (0, 384)


def test_cache_is_bounded_lru(word_embedder: WordHashEmbedder) -> None:
    cached = CachedEmbedder(word_embedder, max_entries=2)
    run(cached.embed(["a", "b"]))
    run(cached.embed(["a"]))  # a is now the most recent; b is evicted next
    run(cached.embed(["c"]))
    assert len(cached) == 2
    run(cached.embed(["a"]))
    assert word_embedder.embedded == 3
    run(cached.embed(["b"]))
    assert word_embedder.embedded == 4


def test_cache_key_includes_the_model() -> None:
    one, two = WordHashEmbedder(name="m1"), WordHashEmbedder(name="m2")
    assert CachedEmbedder(one)._key("x") != CachedEmbedder(two)._key("x")


def test_cache_refuses_wrong_shape_from_the_inner_embedder() -> None:
    class Broken(WordHashEmbedder):
        async def embed(self, texts: Any) -> np.ndarray:
            return np.ones((len(texts), 3), dtype=np.float32)

    with pytest.raises(ValueError, match=r"expected \(1, 384\)"):
        run(CachedEmbedder(Broken()).embed(["x"]))


def test_minilm_embeds_unit_vectors_that_capture_meaning(minilm: LocalEmbedder) -> None:
    vectors = run(
        minilm.embed(
            [
                "the database migration failed",
                "schema upgrade of the DB crashed",
                "a recipe for banana bread",
            ]
        )
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert minilm.model_name == "minilm-l6-v2"


def test_embedders_pickle_without_their_heavy_parts(minilm: LocalEmbedder) -> None:
    clone = pickle.loads(pickle.dumps(minilm))
    assert clone._model is None
    cached = CachedEmbedder(minilm)
    run(cached.embed(["x"]))
    assert len(pickle.loads(pickle.dumps(cached))) == 0
    remote = OpenAIEmbedder("http://127.0.0.1:1/v1")
    remote._get_client()
    assert pickle.loads(pickle.dumps(remote))._client is None


class _Stub:
    """A tiny OpenAI-compatible ``/v1/embeddings`` server on 127.0.0.1 with scripted answers."""

    def __init__(self, responders: list[Responder]) -> None:
        self.responders = responders
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/embeddings", self.path
                stub.requests.append(body)
                status, payload = stub.responders.pop(0)(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[Callable[[list[Responder]], _Stub]]:
    servers: list[_Stub] = []

    def start(responders: list[Responder]) -> _Stub:
        servers.append(_Stub(responders))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def ok(dimension: int = 4) -> Responder:
    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Reversed order: the client must sort by index.
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + 1)] * dimension}
            for i in range(len(body["input"]))
        ][::-1]
        return 200, {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    return answer


def fail(status: int) -> Responder:
    return lambda _: (status, {"error": {"message": "nope", "type": "x", "code": status}})


def test_openai_embedder_calls_the_endpoint(stub: Callable[[list[Responder]], _Stub]) -> None:
    server = stub([ok()])
    embedder = OpenAIEmbedder(server.url, model="minilm-l6-v2", dimension=4)
    vectors = run(embedder.embed(["a", "b"]))
    assert server.requests == [
        {"model": "minilm-l6-v2", "input": ["a", "b"], "encoding_format": "float"}
    ]
    assert np.allclose(vectors, 0.5)  # [1,1,1,1] and [2,2,2,2] normalised
    assert embedder.model_name == "minilm-l6-v2"


def test_openai_embedder_retries_transient_errors(
    stub: Callable[[list[Responder]], _Stub],
) -> None:
    server = stub([fail(503), fail(429), ok()])
    vectors = run(OpenAIEmbedder(server.url, dimension=4, attempts=3).embed(["a"]))
    assert vectors.shape == (1, 4)
    assert len(server.requests) == 3


def test_openai_embedder_gives_up_with_a_delivery_error(
    stub: Callable[[list[Responder]], _Stub],
) -> None:
    server = stub([fail(500), fail(500)])
    with pytest.raises(DeliveryError, match="failed 2 times") as exc:
        run(OpenAIEmbedder(server.url, dimension=4, attempts=2).embed(["a"]))
    assert exc.value.retryable


def test_openai_embedder_unreachable_is_a_delivery_error() -> None:
    embedder = OpenAIEmbedder("http://127.0.0.1:1/v1", dimension=4, attempts=1, timeout_s=2)
    with pytest.raises(DeliveryError, match="127.0.0.1:1"):
        run(embedder.embed(["a"]))


def test_openai_embedder_client_errors_are_configuration_errors(
    stub: Callable[[list[Responder]], _Stub],
) -> None:
    server = stub([fail(404), ok(dimension=8)])
    embedder = OpenAIEmbedder(server.url, model="missing", dimension=4)
    with pytest.raises(ConfigurationError, match="HTTP 404"):
        run(embedder.embed(["a"]))
    assert len(server.requests) == 1  # not retried
    with pytest.raises(ConfigurationError, match=r"shape \(1, 8\), expected \(1, 4\)"):
        run(embedder.embed(["a"]))


def test_long_texts_are_embedded_by_their_start(
    stub: Callable[[list[Responder]], _Stub],
) -> None:
    server = stub([ok()])
    embedder = OpenAIEmbedder(server.url, dimension=4, max_chars=10)
    run(embedder.embed(["short", "x" * 10 + " and a long tail that MiniLM could not take"]))
    assert server.requests[0]["input"] == ["short", "x" * 10]


def test_a_text_the_endpoint_still_finds_too_long_is_sent_again_shorter(
    stub: Callable[[list[Responder]], _Stub],
) -> None:
    def window(limit: int) -> Responder:
        """Like the serve app: a 400 naming the input over the model's window."""

        def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            long = [i for i, text in enumerate(body["input"]) if len(text) > limit]
            if long:
                error = {
                    "message": f"input[{long[0]}] has 467 tokens",
                    "type": "invalid_request_error",
                    "param": "input",
                    "code": "context_length_exceeded",
                }
                return 400, {"error": error}
            return ok()(body)

        return answer

    server = stub([window(150)] * 3)
    vectors = run(OpenAIEmbedder(server.url, dimension=4).embed(["a", "{" * 1000]))
    assert vectors.shape == (2, 4)
    assert [len(r["input"][1]) for r in server.requests] == [400, 200, 100]
    # any other 400 is the user's setup, at once
    other = stub([fail(400)])
    with pytest.raises(ConfigurationError, match="HTTP 400"):
        run(OpenAIEmbedder(other.url, dimension=4).embed(["a"]))
    assert len(other.requests) == 1


def test_the_local_minilm_clips_like_the_endpoint(minilm: LocalEmbedder) -> None:
    head = "the nightly backup keeps fourteen daily snapshots " * 10
    assert len(head) > 400
    long, short = run(minilm.embed([head + "banana bread recipe " * 50, head[:400]]))
    assert np.allclose(long, short, atol=1e-5)
