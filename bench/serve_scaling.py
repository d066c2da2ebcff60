"""Autoscaling demonstration: aggregate chat throughput with 1 replica, then after Serve adds one.

Deploys the bundled chat model with autoscaling (1 to 2 replicas, one llama.cpp thread each, a
low ``target_ongoing_requests`` and a short ``upscale_delay_s``), keeps ``--concurrency`` clients
busy with the ``openai`` client, and polls ``serve.status()`` for the replica count. Throughput
is the completion rate (tokens finished per second) while one replica runs, and again over a
window once the second one is running. Starts a private local Ray, deletes its app and
stops only that Ray. Prints one JSON object as the last line.

    .venv/bin/python bench/serve_scaling.py [--concurrency 8] [--max-tokens 32] [--window-s 20]

On a 2-core machine two replicas share the cores with the proxy, the ingress and the clients,
so the gain is bounded well below 2x; other work on the machine moves the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Run as a script, this file's folder comes first on sys.path and would shadow the `serve`
# package; the repository root goes there instead (as in bench/serve.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import openai  # noqa: E402  (after the sys.path fix above)
import ray  # noqa: E402
from ray import serve  # noqa: E402

from serve import LlamaCppSettings, ServeSettings, deploy, shutdown  # noqa: E402

PROMPT = [{"role": "user", "content": "Describe a lighthouse in two sentences."}]


@dataclass(frozen=True)
class _Done:
    started: float
    ended: float
    tokens: int
    replicas_at_end: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ReplicaWatch:
    """Polls ``serve.status()`` for the deployment's replica states."""

    def __init__(self, app: str, deployment: str, interval_s: float = 0.5) -> None:
        self._app, self._deployment, self._interval_s = app, deployment, interval_s
        self.running = 0
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def poll(self) -> dict[str, int]:
        status = serve.status().applications[self._app].deployments[self._deployment]
        states = {str(getattr(k, "value", k)): int(v) for k, v in status.replica_states.items()}
        self.running = states.get("RUNNING", 0)
        if not self.timeline or self.timeline[-1][1] != states:
            self.timeline.append((time.perf_counter(), states))
        return states

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.poll()
            except Exception:  # a status call can fail while the controller is busy; poll again
                continue


def _drive(
    client: openai.OpenAI,
    model: str,
    watch: _ReplicaWatch,
    *,
    concurrency: int,
    max_tokens: int,
    until: threading.Event,
) -> list[_Done]:
    """Keeps ``concurrency`` clients busy until ``until`` is set; every finished request."""
    done: list[_Done] = []
    lock = threading.Lock()

    def worker() -> None:
        while not until.is_set():
            started = time.perf_counter()
            completion = client.chat.completions.create(
                model=model,
                messages=PROMPT,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0,
            )
            assert completion.usage is not None
            item = _Done(
                started,
                time.perf_counter(),
                completion.usage.completion_tokens,
                watch.running,
            )
            with lock:
                done.append(item)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        for future in futures:
            future.result()
    return done


def _tokens_s(done: list[_Done], start: float, end: float) -> tuple[float, int]:
    """Steady completion rate in [start, end]: tokens finished after the first completion there,
    over the time from that completion to the last one; and how many requests that counts."""
    ends = sorted((d.ended, d.tokens) for d in done if start <= d.ended <= end)
    if len(ends) < 2:
        return float("nan"), len(ends)
    (first, _), (last, _) = ends[0], ends[-1]
    return sum(tokens for _, tokens in ends[1:]) / (last - first), len(ends) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--upscale-delay-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=20.0, help="measured 2-replica window")
    parser.add_argument("--scale-timeout-s", type=float, default=120.0)
    args = parser.parse_args()

    chat_model = LlamaCppSettings(
        n_threads=1,
        num_cpus=1.0,
        n_ctx=2048,
        max_ongoing_requests=16,
        min_replicas=1,
        max_replicas=2,
        target_ongoing_requests=1,
        upscale_delay_s=args.upscale_delay_s,
        downscale_delay_s=600,
    )
    settings = ServeSettings(
        port=_free_port(), app_name="troupe-models-scaling", models=[chat_model]
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    watch = _ReplicaWatch(settings.app_name, chat_model.deployment_name)
    try:
        base_url = deploy(settings)
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300)
        client.chat.completions.create(  # warm-up
            model=chat_model.name,
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=4,
            temperature=0,
        )
        watch.start()
        initial_states = dict(watch.timeline[-1][1])
        stop = threading.Event()
        result: dict[str, list[_Done]] = {}
        driver = threading.Thread(
            target=lambda: result.setdefault(
                "done",
                _drive(
                    client,
                    chat_model.name,
                    watch,
                    concurrency=args.concurrency,
                    max_tokens=args.max_tokens,
                    until=stop,
                ),
            )
        )
        load_started = time.perf_counter()
        driver.start()
        deadline = load_started + args.scale_timeout_s
        while watch.running < 2 and time.perf_counter() < deadline:
            time.sleep(0.2)
        scaled_at = time.perf_counter() if watch.running >= 2 else float("nan")
        settle_s = 3.0
        window_start = time.perf_counter() + settle_s
        time.sleep(settle_s + args.window_s)
        window_end = time.perf_counter()
        stop.set()
        driver.join()
        watch.stop()
        final_states = watch.poll()
    finally:
        shutdown(settings)
        ray.shutdown()

    done = result["done"]
    one_end = scaled_at if scaled_at == scaled_at else window_end
    one_tokens_s, one_requests = _tokens_s(
        [d for d in done if d.replicas_at_end == 1], load_started, one_end
    )
    two_tokens_s, two_requests = _tokens_s(done, window_start, window_end)
    timeline = [
        {"t_s": round(t - load_started, 1), "replicas": states} for t, states in watch.timeline
    ]
    output: dict[str, Any] = {
        "bench": "serve_scaling",
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "n_threads_per_replica": 1,
        "autoscaling": {
            "min_replicas": chat_model.min_replicas,
            "max_replicas": chat_model.max_replicas,
            "target_ongoing_requests": chat_model.target_ongoing_requests,
            "upscale_delay_s": chat_model.upscale_delay_s,
        },
        "replicas_initial": initial_states,
        "replicas_final": final_states,
        "replica_timeline": timeline,
        "scale_up_after_s": round(scaled_at - load_started, 1) if scaled_at == scaled_at else None,
        "tokens_s_1_replica": round(one_tokens_s, 1),
        "requests_1_replica": one_requests,
        "tokens_s_2_replicas": round(two_tokens_s, 1),
        "requests_2_replicas": two_requests,
        "speedup": round(two_tokens_s / one_tokens_s, 3) if one_requests else None,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(output))


if __name__ == "__main__":
    main()
