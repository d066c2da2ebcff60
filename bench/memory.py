"""Episodic memory benchmark: the embedded store at 10k and 100k episodes (384-d random
vectors), the Weaviate path through the wire-compatible stand-in, and retrieval quality on
the labelled set with the bundled MiniLM. Prints one JSON object as the last line.

    .venv/bin/python bench/memory.py [--sizes 10000 100000] [--queries 200]

The headline fields (``insert_per_s``, ``recall_p50_ms``, ``recall_p99_ms``, ``rss_mb``) are
for the largest size; ``mrr`` and ``recall_at_5`` for hybrid recall. The stand-in is a Python
linear scan, so its numbers show the client-side overhead of the Weaviate path (gRPC, proto
encoding, ranking here), not Weaviate server speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from memory import (  # noqa: E402
    EmbeddedStore,
    Episode,
    LocalEmbedder,
    RecallQuery,
    WeaviateMemory,
    WeaviateSettings,
)

DIMENSION = 384
WORDS = [f"w{i}" for i in range(5000)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _episodes(rng: np.random.Generator, start: int, count: int) -> list[Episode]:
    now = datetime.now(UTC)
    words = rng.choice(len(WORDS), size=(count, 12))
    return [
        Episode.create(
            kind="observation",
            content=" ".join(WORDS[w] for w in words[i]),
            agent=f"agent-{(start + i) % 8}",
            task_id=f"task-{(start + i) % 1000}",
            step_id=str(start + i),
            created_at=now - timedelta(seconds=start + i),
            importance=float(rng.random()),
        )
        for i in range(count)
    ]


def _queries(rng: np.random.Generator, count: int) -> list[RecallQuery]:
    return [
        RecallQuery(
            text=" ".join(WORDS[w] for w in rng.choice(len(WORDS), size=4)),
            vector=tuple(rng.normal(size=DIMENSION).tolist()),
            k=10,
        )
        for _ in range(count)
    ]


def _latencies_ms(call: Any, queries: list[RecallQuery]) -> dict[str, float]:
    for query in queries[:5]:
        call(query)  # warm up
    times = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "recall_p50_ms": round(statistics.median(times), 3),
        "recall_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


def embedded(size: int, queries: int, batch: int, seed: int) -> dict[str, Any]:
    """Insert ``size`` episodes into a persisted store, recall, then reload it."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.jsonl"
        store = EmbeddedStore(path)
        elapsed = 0.0
        for start in range(0, size, batch):
            count = min(batch, size - start)
            episodes = _episodes(rng, start, count)
            vectors = rng.normal(size=(count, DIMENSION)).astype(np.float32)
            started = time.perf_counter()
            store.remember(episodes, vectors)
            elapsed += time.perf_counter() - started
        result: dict[str, Any] = {
            "episodes": size,
            "insert_per_s": round(size / elapsed),
            **_latencies_ms(store.recall, _queries(rng, queries)),
        }
        filtered = [q.model_copy(update={"agent": "agent-3"}) for q in _queries(rng, queries)]
        result["filtered_recall_p50_ms"] = _latencies_ms(store.recall, filtered)["recall_p50_ms"]
        result["file_mb"] = round(path.stat().st_size / 2**20, 1)
        result["rss_mb"] = round(_rss_mb())
        del store  # a restart: the reloaded store is the only copy
        started = time.perf_counter()
        reloaded = EmbeddedStore(path)
        result["reload_s"] = round(time.perf_counter() - started, 2)
        assert reloaded.count() == size
        del reloaded
    return result


def weaviate_standin(size: int, queries: int, seed: int) -> dict[str, Any]:
    """The Weaviate backend through the real client against the stand-in."""
    from tests.memory.weaviate_standin import WeaviateStandIn

    rng = np.random.default_rng(seed)
    server = WeaviateStandIn()
    try:
        memory = WeaviateMemory(WeaviateSettings(url=server.url, grpc_port=server.grpc_port))
        episodes = _episodes(rng, 0, size)
        vectors = rng.normal(size=(size, DIMENSION)).astype(np.float32)
        started = time.perf_counter()
        for start in range(0, size, 200):
            asyncio.run(
                memory.remember(episodes[start : start + 200], vectors=vectors[start : start + 200])
            )
        insert_per_s = size / (time.perf_counter() - started)
        latencies = _latencies_ms(lambda q: asyncio.run(memory.recall(q)), _queries(rng, queries))
        memory.close()
    finally:
        server.stop()
    return {"episodes": size, "insert_per_s": round(insert_per_s), **latencies}


def quality() -> dict[str, Any]:
    """MRR and recall@5 on the labelled set, per retrieval mode."""
    from tests.memory.retrieval_eval import evaluate

    embedder = LocalEmbedder()
    return {
        "hybrid": evaluate(embedder, "hybrid"),
        "vector": evaluate(embedder, "vector"),
        "keyword": evaluate(None, "keyword"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--standin-episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sizes = [embedded(n, args.queries, args.batch, args.seed) for n in args.sizes]
    for row in sizes:
        print(json.dumps({"embedded": row}), flush=True)
    standin = weaviate_standin(args.standin_episodes, min(args.queries, 50), args.seed)
    print(json.dumps({"weaviate_standin": standin}), flush=True)
    scores = quality()
    print(json.dumps({"quality": scores}), flush=True)
    largest = sizes[-1]
    print(
        json.dumps(
            {
                "insert_per_s": largest["insert_per_s"],
                "recall_p50_ms": largest["recall_p50_ms"],
                "recall_p99_ms": largest["recall_p99_ms"],
                "rss_mb": largest["rss_mb"],
                "mrr": scores["hybrid"]["mrr"],
                "recall_at_5": scores["hybrid"]["recall_at_5"],
                "episodes": largest["episodes"],
                "embedded": sizes,
                "weaviate_standin": standin,
                "quality": scores,
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
