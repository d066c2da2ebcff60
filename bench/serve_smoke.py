"""Smoke benchmark of the model API: real Serve app, bundled model, real `openai` client.

Starts a private local Ray, deploys the app on a free port, measures plain and streamed chat
latency and a small concurrent burst, deletes the app and stops its Ray. Prints one JSON object
as the last line.

    .venv/bin/python bench/serve_smoke.py [--threads 1] [--requests 8] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import ray

from serve import LlamaCppSettings, ServeSettings, deploy, shutdown

PROMPT = [{"role": "user", "content": "Describe a lighthouse in two sentences."}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat(client: openai.OpenAI, model: str, max_tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    completion = client.chat.completions.create(
        model=model,
        messages=PROMPT,
        max_tokens=max_tokens,
        temperature=0,
    )
    assert completion.usage is not None
    return time.perf_counter() - started, completion.usage.completion_tokens


def _first_token_s(client: openai.OpenAI, model: str, max_tokens: int) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=PROMPT,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    return first if first is not None else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per replica")
    parser.add_argument("--requests", type=int, default=8, help="sequential requests to time")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    model = LlamaCppSettings(n_threads=args.threads, num_cpus=0.5, n_ctx=2048)
    settings = ServeSettings(port=_free_port(), app_name="troupe-models-bench", models=[model])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        deploy_started = time.perf_counter()
        base_url = deploy(settings)
        deploy_s = time.perf_counter() - deploy_started
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120)
        _chat(client, model.name, 4)  # warm-up
        runs = [_chat(client, model.name, args.max_tokens) for _ in range(args.requests)]
        ttft = [_first_token_s(client, model.name, args.max_tokens) for _ in range(3)]
        burst_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            burst = list(pool.map(lambda _: _chat(client, model.name, args.max_tokens), range(8)))
        burst_s = time.perf_counter() - burst_started
    finally:
        shutdown(settings)
        ray.shutdown()

    latencies = [seconds for seconds, _ in runs]
    result: dict[str, Any] = {
        "bench": "serve_smoke",
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "deploy_s": round(deploy_s, 2),
        "chat_p50_s": round(statistics.median(latencies), 3),
        "chat_max_s": round(max(latencies), 3),
        "generation_tok_per_s": round(sum(n for _, n in runs) / sum(latencies), 1),
        "stream_first_token_p50_s": round(statistics.median(ttft), 3),
        "burst_8_over_4_clients_s": round(burst_s, 2),
        "burst_tok_per_s": round(sum(n for _, n in burst) / burst_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
