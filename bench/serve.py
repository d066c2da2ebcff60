"""Benchmark of the model API against the engines it wraps, on the bundled models.

In one run, with the same llama.cpp threads on both sides: raw llama-cpp-python in-process vs our
Serve endpoint through the `openai` client, single stream and at concurrency 4 and 16 (greedy,
same prompt, same token count); then raw sentence-transformers vs `/v1/embeddings`. Starts a
private local Ray, deletes its app and stops only that Ray. Prints one JSON object as the last
line. Raw and served requests alternate one by one (the order rotating), so a change of load on
a shared machine hits both sides alike; the raw side runs while the Serve replicas sit idle and
the other way round, so the two never share the cores.

    .venv/bin/python bench/serve.py [--threads 1] [--requests 30] [--max-tokens 32]
        [--colocate auto|yes|no]

`--colocate` picks where the models run: `auto` is the app's default (in the ingress replica,
as both models have one fixed CPU replica), `no` gives each model a deployment of its own (one
replica hop more per request).

`overhead_ms_p50` is the median over the timed requests of (served latency - the latency of
the raw request run next to it): pairs share the machine's load of the moment, which a
difference of two medians does not (32 decode steps alone vary by +-10-30 ms between requests
on a shared machine). `overhead_ms_p50_1_token` does the same for 30 pairs of one-token
requests, which isolates the per-request cost of the Serve path from decode time altogether.

Served requests go to the URL `deploy` returns: the ingress replica's direct listener
(`ServeSettings.direct_port`). The `*_proxy` fields time the same requests through Serve's HTTP
proxy, which serves the same app; `--direct off` deploys without the direct listener.

On a shared 2-core machine numbers move with whatever else runs; compare within one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models load from site-packages
# Run as a script, this file's folder comes first on sys.path and this file would shadow the
# `serve` package; the repository root goes there instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import openai  # noqa: E402  (after the sys.path fix above)
import ray  # noqa: E402

from serve import (  # noqa: E402
    LlamaCppSettings,
    SentenceTransformersSettings,
    ServeSettings,
    bundled_embedding_model_path,
    bundled_model_path,
    deploy,
    shutdown,
)

PROMPT = [{"role": "user", "content": "Describe a lighthouse in two sentences."}]
SENTENCES = [f"Sentence number {i} talks about lighthouses, ships and the sea." for i in range(256)]
EMBED_BATCH = 32
# Requests of one token each, raw and served: their latency difference is the request overhead
# without the noise of 32 decode steps (which alone varies by +-10 ms on a shared machine).
OVERHEAD_REQUESTS = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class RawChat:
    """Raw llama-cpp-python in this process, with the bundled model and ``threads`` threads."""

    def __init__(self, threads: int) -> None:
        import llama_cpp

        self._llm = llama_cpp.Llama(
            model_path=str(bundled_model_path()), n_ctx=2048, n_threads=threads, verbose=False
        )

    def __call__(self, max_tokens: int) -> tuple[float, int]:
        """One greedy request: its latency in seconds and its completion tokens."""
        started = time.perf_counter()
        out: Any = self._llm.create_chat_completion(
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0,
        )
        return time.perf_counter() - started, int(out["usage"]["completion_tokens"])

    def close(self) -> None:
        self._llm.close()


def _overhead_ms(served: list[tuple[float, int]], raw: list[tuple[float, int]]) -> float:
    """Median of (served - raw) latency over the pairs ``interleaved`` ran together, in ms."""
    return round(_p50([s - r for (s, _), (r, _) in zip(served, raw, strict=True)]) * 1000, 1)


def interleaved(
    raw: Callable[[], tuple[float, int]], served: Callable[[], tuple[float, int]], count: int
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """``count`` requests each side, alternating (who goes first rotates); both lists of runs."""
    raw_runs, served_runs = [], []
    for i in range(count):
        if i % 2 == 0:
            raw_runs.append(raw())
            served_runs.append(served())
        else:
            served_runs.append(served())
            raw_runs.append(raw())
    return raw_runs, served_runs


def served_chat(client: openai.OpenAI, model: str, max_tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    completion = client.chat.completions.create(
        model=model,
        messages=PROMPT,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
    )
    assert completion.usage is not None
    return time.perf_counter() - started, completion.usage.completion_tokens


def first_token_s(client: openai.OpenAI, model: str, max_tokens: int) -> float:
    started = time.perf_counter()
    first = float("nan")
    stream = client.chat.completions.create(
        model=model,
        messages=PROMPT,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if first != first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first


def burst(client: openai.OpenAI, model: str, *, clients: int, max_tokens: int) -> float:
    """Aggregate tokens/s of ``clients`` concurrent clients, two requests each."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        runs = list(pool.map(lambda _: served_chat(client, model, max_tokens), range(2 * clients)))
    return sum(n for _, n in runs) / (time.perf_counter() - started)


def raw_embeddings(threads: int) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(bundled_embedding_model_path()), device="cpu")
    model.encode(SENTENCES[:EMBED_BATCH], batch_size=EMBED_BATCH)  # warm-up
    started = time.perf_counter()
    model.encode(SENTENCES, batch_size=EMBED_BATCH, normalize_embeddings=True)
    return len(SENTENCES) / (time.perf_counter() - started)


def served_embeddings(client: openai.OpenAI, model: str) -> float:
    client.embeddings.create(model=model, input=SENTENCES[:EMBED_BATCH])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(SENTENCES), EMBED_BATCH):
        client.embeddings.create(model=model, input=SENTENCES[start : start + EMBED_BATCH])
    return len(SENTENCES) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp and torch threads")
    parser.add_argument(
        "--requests", type=int, default=30, help="sequential requests to time, each side"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--direct",
        choices=("on", "off"),
        default="on",
        help="the ingress replica's direct listener (on, the default) or the Serve proxy only",
    )
    parser.add_argument(
        "--colocate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="models in the ingress replica (yes), in deployments of their own (no), or default",
    )
    args = parser.parse_args()
    colocate = {"auto": None, "yes": True, "no": False}[args.colocate]

    chat_model = LlamaCppSettings(
        n_threads=args.threads,
        num_cpus=1.0,
        n_ctx=2048,
        max_ongoing_requests=32,
        colocate=colocate,
    )
    embed_model = SentenceTransformersSettings(
        n_threads=args.threads, num_cpus=0.25, colocate=colocate
    )
    settings = ServeSettings(
        port=_free_port(),
        direct_port=0 if args.direct == "on" else None,
        app_name="troupe-models-bench",
        models=[chat_model, embed_model],
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        base_url = deploy(settings)
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300)
        proxy = openai.OpenAI(base_url=settings.base_url, api_key="x", max_retries=0, timeout=300)
        raw_chat = RawChat(args.threads)
        try:
            for tokens in (4, 1):  # warm-up, every side
                raw_chat(tokens)
                served_chat(client, chat_model.name, tokens)
                served_chat(proxy, chat_model.name, tokens)
            # (raw, served) pairs of timed requests, then of one-token requests, per way in.
            timed = {
                way: [
                    interleaved(
                        functools.partial(raw_chat, tokens),
                        functools.partial(served_chat, api, chat_model.name, tokens),
                        count,
                    )
                    for tokens, count in ((args.max_tokens, args.requests), (1, OVERHEAD_REQUESTS))
                ]
                for way, api in (("direct", client), ("proxy", proxy))
            }
        finally:
            raw_chat.close()
        ttft = [first_token_s(client, chat_model.name, args.max_tokens) for _ in range(5)]
        concurrent = {
            c: burst(client, chat_model.name, clients=c, max_tokens=args.max_tokens)
            for c in (4, 16)
        }
        raw_sentences_s = raw_embeddings(args.threads)
        served_sentences_s = served_embeddings(client, embed_model.name)
    finally:
        shutdown(settings)
        ray.shutdown()

    (raw_runs, runs), (raw_one, served_one) = timed["direct"]
    (proxy_raw_runs, proxy_runs), (proxy_raw_one, proxy_one) = timed["proxy"]
    seconds = [s for s, _ in runs]
    raw_seconds = [s for s, _ in raw_runs]
    serve_tokens_s = sum(n for _, n in runs) / sum(seconds)
    raw_tokens_s = sum(n for _, n in raw_runs) / sum(raw_seconds)
    raw_latency_ms = _p50(raw_seconds) * 1000
    result = {
        "bench": "serve",
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "endpoint": "direct" if base_url != settings.base_url else "proxy",
        "colocated": [chat_model.colocated, embed_model.colocated],
        "completion_tokens_raw": [n for _, n in raw_runs],
        "completion_tokens_serve": [n for _, n in runs],
        "raw_tokens_s": round(raw_tokens_s, 1),
        "serve_tokens_s": round(serve_tokens_s, 1),
        "ratio": round(serve_tokens_s / raw_tokens_s, 3),
        "raw_latency_ms_p50": round(raw_latency_ms, 1),
        "serve_latency_ms_p50": round(_p50(seconds) * 1000, 1),
        "overhead_ms_p50": _overhead_ms(runs, raw_runs),
        "overhead_ms_p50_1_token": _overhead_ms(served_one, raw_one),
        "overhead_ms_p50_proxy": _overhead_ms(proxy_runs, proxy_raw_runs),
        "overhead_ms_p50_1_token_proxy": _overhead_ms(proxy_one, proxy_raw_one),
        "ttft_ms_p50": round(_p50(ttft) * 1000, 1),
        "serve_tokens_s_concurrency_4": round(concurrent[4], 1),
        "serve_tokens_s_concurrency_16": round(concurrent[16], 1),
        "raw_embed_sentences_s": round(raw_sentences_s, 1),
        "serve_embed_sentences_s": round(served_sentences_s, 1),
        "embed_ratio": round(served_sentences_s / raw_sentences_s, 3),
        "note": "one replica per model; shared 2-core machine, other work may have run",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
