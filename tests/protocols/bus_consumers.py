"""Consumers for bus tests: used in-process as is, and inside ``RecordingActor`` on Ray."""

from __future__ import annotations

import asyncio
from typing import Any

from protocols import (
    ConsumerHost,
    Envelope,
    ErrorReport,
    LaneAddress,
    StepAssigned,
    StepResult,
    member_lane,
)
from protocols._consumer import BatchResult


class RecordingConsumer:
    """Records every envelope it gets and answers according to ``behaviour``.

    echo: a StepResult naming this consumer; error: a retryable ErrorReport; fatal: a
    non-retryable one; flaky: error on the first delivery of a message id, then echo; silent:
    no reply; slow: echo after ``delay`` seconds; crash: raise; effect: write the message id to a
    ledger actor (an idempotent effect), then echo after ``delay``.
    """

    def __init__(
        self, name: str, behaviour: str = "echo", *, delay: float = 2.0, ledger: Any = None
    ):
        self.name = name
        self.behaviour = behaviour
        self.delay = delay
        self.ledger = ledger
        self._seen: list[str] = []
        self._failed_once: set[str] = set()

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        payload = envelope.payload
        assert isinstance(payload, StepAssigned)
        self._seen.append(payload.step.id)
        if self.behaviour == "crash":
            raise RuntimeError("handler bug")
        if self.behaviour == "silent":
            return None
        if self.behaviour in ("error", "fatal") or (
            self.behaviour == "flaky" and envelope.message_id not in self._failed_once
        ):
            self._failed_once.add(envelope.message_id)
            return envelope.reply(
                self._report(payload, self.behaviour != "fatal"), sender=self.name
            )
        if self.behaviour == "effect":
            await self.ledger.record.remote(envelope.message_id, self.name)
        if self.behaviour in ("slow", "effect"):
            await asyncio.sleep(self.delay)
        result = StepResult(
            task_id=payload.task_id, step_id=payload.step.id, output=self.name, ok=True
        )
        return envelope.reply(result, sender=self.name)

    def _report(self, payload: StepAssigned, retryable: bool) -> ErrorReport:
        return ErrorReport(
            task_id=payload.task_id,
            sender=self.name,
            code="model_unavailable" if retryable else "bad_input",
            error_type="AgentError",
            message="try later" if retryable else "cannot do this",
            retryable=retryable,
        )

    def seen(self) -> list[str]:
        return list(self._seen)


class RecordingActor:
    """Ray actor body: a ``RecordingConsumer`` behind a ``ConsumerHost``."""

    def __init__(self, name: str, behaviour: str, delay: float, ledger: Any, capacity: int):
        self.consumer = RecordingConsumer(name, behaviour, delay=delay, ledger=ledger)
        self.host = ConsumerHost(self.consumer, name=name, capacity=capacity)
        self.lane = member_lane(self)

    async def lane_address(self) -> LaneAddress | None:
        return await self.lane.address()

    def lane_calls(self) -> int:
        return self.lane.served

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        return await self.host.deliver(envelope)

    async def deliver_batch(self, envelopes: list[Envelope]) -> list[BatchResult]:
        return await self.host.deliver_batch(envelopes)

    def seen(self) -> list[str]:
        return self.consumer.seen()

    def heal(self) -> None:
        self.consumer.behaviour = "echo"


class Ledger:
    """Ray actor body: side effects keyed by idempotency key (the message id)."""

    def __init__(self) -> None:
        self.effects: dict[str, str] = {}
        self.writes = 0

    def record(self, key: str, by: str) -> None:
        self.writes += 1
        self.effects.setdefault(key, by)

    def read(self) -> tuple[dict[str, str], int]:
        return dict(self.effects), self.writes
