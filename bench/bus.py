"""Bus benchmark on Ray: raw actor call vs bus hop latency, and throughput.

Run: ``.venv/bin/python bench/bus.py`` (or ``make bench``). The last line is one JSON object:
``raw_actor_p50_us`` (an actor call carrying the same envelope to a method that does nothing),
``hop_p50_us``/``hop_p99_us`` (``publish`` -> handler -> ack through ``RayBus`` and
``ConsumerHost``), ``overhead_ratio`` (hop p50 / raw p50), ``throughput_msgs_s`` (1 producer,
1 consumer, ``publish_batch``), ``throughput_4x4_msgs_s`` (4 producer actors, a group of 4
consumers), and ``order_violations`` (messages of a task seen out of order: must be 0).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from protocols import (
    BusConfig,
    ConsumerActor,
    Envelope,
    InMemoryDeadLetters,
    RayBus,
    Step,
    StepAssigned,
)

HOP_SAMPLES = 2000
BATCH_MESSAGES = 40_000
TASKS = 64
STEP = Step(id="s0", description="benchmark step", tool="answer")


class Sink:
    """A consumer that acknowledges at once and checks per-task order."""

    def __init__(self) -> None:
        self.last: dict[str | None, int] = {}
        self.count = 0
        self.violations = 0

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        payload = envelope.payload
        assert isinstance(payload, StepAssigned)
        seq = payload.attempt
        if seq <= self.last.get(envelope.task_id, -1):
            self.violations += 1
        self.last[envelope.task_id] = seq
        self.count += 1
        return None


class SinkActor(ConsumerActor):
    """ConsumerActor plus a way to read the sink's counters."""

    def __init__(self) -> None:
        self.sink = Sink()
        super().__init__(lambda: self.sink, name="sink")

    def counters(self) -> tuple[int, int]:
        return self.sink.count, self.sink.violations


class Floor:
    """The raw actor call: same argument, no work."""

    async def deliver(self, envelope: Envelope) -> None:
        return None


def envelopes(count: int, *, producer: int = 0) -> list[Envelope]:
    """Messages spread over tasks; ``attempt`` carries the per-task sequence number."""
    out = []
    for i in range(count):
        task = f"p{producer}-t{i % TASKS}"
        message = StepAssigned(task_id=task, goal="g", step=STEP, attempt=i // TASKS + 1)
        out.append(Envelope.wrap(message, sender=f"producer-{producer}", topic="bench"))
    return out


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(bus: RayBus, floor: Any) -> tuple[list[float], list[float]]:
    messages = envelopes(2 * HOP_SAMPLES + 200)
    raw, hop = [], []
    for i in range(HOP_SAMPLES + 100):  # interleaved so both see the same machine state
        start = time.perf_counter()
        await floor.deliver.remote(messages[2 * i])
        raw.append(time.perf_counter() - start)
        start = time.perf_counter()
        await bus.publish(messages[2 * i + 1])
        hop.append(time.perf_counter() - start)
    return raw[100:], hop[100:]  # drop warm-up


async def batch_throughput(bus: RayBus, messages: list[Envelope]) -> float:
    start = time.perf_counter()
    await bus.publish_batch(messages)
    return len(messages) / (time.perf_counter() - start)


class Producer:
    """A producer actor with its own copy of the bus."""

    def __init__(self, bus: RayBus, index: int, count: int):
        self.bus = bus
        self.messages = envelopes(count, producer=index)

    async def run(self) -> float:
        start = time.perf_counter()
        await self.bus.publish_batch(self.messages)
        return time.perf_counter() - start


def main() -> None:
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        config = BusConfig(max_in_flight=4096, max_batch=512)
        remote_sink: Any = ray.remote(SinkActor).options(num_cpus=0)
        floor: Any = ray.remote(Floor).options(num_cpus=0).remote()
        one = remote_sink.remote()
        bus = RayBus(InMemoryDeadLetters(), config)
        bus.subscribe("bench", one, group="g")
        raw, hop = asyncio.run(latency(bus, floor))
        single = asyncio.run(batch_throughput(bus, envelopes(BATCH_MESSAGES, producer=1)))

        four = [remote_sink.remote() for _ in range(4)]
        bus4 = RayBus(InMemoryDeadLetters(), config)
        for member in four:
            bus4.subscribe("bench", member, group="g")
        share = BATCH_MESSAGES // 4
        producers = [
            ray.remote(Producer).options(num_cpus=0).remote(bus4, i + 2, share) for i in range(4)
        ]
        ray.get([p.__ray_ready__.remote() for p in producers])
        start = time.perf_counter()
        ray.get([p.run.remote() for p in producers])
        multi = 4 * share / (time.perf_counter() - start)

        counts = ray.get([m.counters.remote() for m in [one, *four]])
        violations = sum(v for _, v in counts)
        handled = sum(c for c, _ in counts)
        expected = HOP_SAMPLES + 100 + BATCH_MESSAGES + 4 * share
        raw_p50 = statistics.median(raw) * 1e6
        hop_p50 = statistics.median(hop) * 1e6
        result = {
            "raw_actor_p50_us": round(raw_p50, 1),
            "hop_p50_us": round(hop_p50, 1),
            "hop_p99_us": round(percentile(hop, 0.99) * 1e6, 1),
            "overhead_ratio": round(hop_p50 / raw_p50, 3),
            "throughput_msgs_s": round(single),
            "throughput_4x4_msgs_s": round(multi),
            "handled": handled,
            "expected": expected,
            "order_violations": violations,
        }
        print(json.dumps(result))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
