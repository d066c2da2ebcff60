"""The consumer side of the bus: deduplication by message id, a bounded inbox, and stats.

Every consumer the bus delivers to is wrapped in a ``ConsumerHost``, in-process or inside a Ray
actor, so both buses get the same guarantees from the same code.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols._bus_types import Consumer
from protocols.errors import DeliveryError, ErrorReport
from protocols.messages import Envelope, describe_validation_error

SKIPPED: Final = "skipped"
"""Batch result for a message not attempted because an earlier one of its task failed."""

BatchResult = Envelope | None | Literal["skipped"]
_NO_REPLY: Final = object()


class ConsumerClosedError(DeliveryError):
    """The consumer was closed; the bus treats it like a member that is gone."""

    default_code = "consumer_closed"


class ConsumerStats(BaseModel):
    """What a consumer host has done so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    in_flight: int = Field(description="Messages being handled now.")
    handled: int = Field(description="Messages whose handler returned.")
    failed: int = Field(description="Handler runs that ended in an error report.")
    duplicates: int = Field(description="Redeliveries answered without running the handler.")
    refused: int = Field(description="Deliveries refused because the inbox was full.")


class ConsumerHost:
    """Wraps a consumer with the bus's consumer-side guarantees.

    * Deduplication: a message id already handled gets the remembered reply without running the
      handler again; one still being handled waits for that run. Failed runs are not remembered,
      so a redelivery runs the handler again.
    * A bounded inbox: beyond ``capacity`` concurrent messages a delivery is refused with a
      retryable ``back_pressure`` report, and the publisher waits or gives up.
    * Failures become ``ErrorReport`` replies; nothing raises back across the bus.

    Args:
        consumer: The handler.
        name: Reported as the sender of error reports.
        capacity: Messages handled at once before refusing more.
        remember: How many handled message ids (and replies) are kept for deduplication.
    """

    def __init__(
        self, consumer: Consumer, *, name: str, capacity: int = 1024, remember: int = 10_000
    ):
        self._consumer = consumer
        self._name = name
        self._capacity = capacity
        self._remember = remember
        self._done: OrderedDict[str, object] = OrderedDict()
        self._running: dict[str, asyncio.Future[Envelope | None]] = {}
        self._handled = self._failed = self._duplicates = self._refused = 0
        self._closed = False

    def close(self) -> None:
        """Stops taking messages: later deliveries raise ``ConsumerClosedError``."""
        self._closed = True

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        """Handles one envelope at most once per message id (while it is remembered)."""
        if self._closed:
            raise ConsumerClosedError(f"{self._name} is closed")
        key = envelope.message_id
        if key in self._done:
            self._duplicates += 1
            self._done.move_to_end(key)
            done = self._done[key]
            return None if done is _NO_REPLY else done  # type: ignore[return-value]
        if key in self._running:
            self._duplicates += 1
            return await asyncio.shield(self._running[key])
        if len(self._running) >= self._capacity:
            self._refused += 1
            return self._report(
                envelope, "back_pressure", f"{self._name} is full ({self._capacity} in flight)"
            )
        future: asyncio.Future[Envelope | None] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            reply = await self._run(envelope)
        finally:
            del self._running[key]
        future.set_result(reply)
        return reply

    async def deliver_json(self, data: str | bytes) -> Envelope | ErrorReport | None:
        """Entry point for envelopes from outside (JSON): invalid input is an error report.

        Nothing a sender writes can crash the consumer: the envelope is validated first, and a
        refusal names every bad field.
        """
        try:
            envelope = Envelope.model_validate_json(data)
        except ValidationError as exc:
            return ErrorReport(
                sender=self._name,
                code="invalid_message",
                error_type="MessageValidationError",
                message=describe_validation_error(exc),
                retryable=False,
            )
        return await self.deliver(envelope)

    async def deliver_batch(self, envelopes: list[Envelope]) -> list[BatchResult]:
        """Handles envelopes in order; after a failure, later ones of that task are skipped.

        Skipping keeps per-task order: the publisher redelivers the failed message and then the
        skipped ones, in their original order.
        """
        results: list[BatchResult] = []
        failed_tasks: set[str | None] = set()
        for envelope in envelopes:
            if envelope.task_id in failed_tasks:
                results.append(SKIPPED)
                continue
            reply = await self.deliver(envelope)
            if reply is not None and isinstance(reply.payload, ErrorReport):
                failed_tasks.add(envelope.task_id)
            results.append(reply)
        return results

    def stats(self) -> ConsumerStats:
        """Counters for metrics."""
        return ConsumerStats(
            name=self._name,
            in_flight=len(self._running),
            handled=self._handled,
            failed=self._failed,
            duplicates=self._duplicates,
            refused=self._refused,
        )

    async def _run(self, envelope: Envelope) -> Envelope | None:
        try:
            reply = await self._consumer.deliver(envelope)
        except Exception as exc:
            self._failed += 1
            report = ErrorReport.from_exception(exc, sender=self._name, task_id=envelope.task_id)
            return envelope.reply(report, sender=self._name)
        if reply is not None and isinstance(reply.payload, ErrorReport):
            self._failed += 1
            return reply
        self._handled += 1
        self._done[envelope.message_id] = _NO_REPLY if reply is None else reply
        if len(self._done) > self._remember:
            self._done.popitem(last=False)
        return reply

    def _report(self, envelope: Envelope, code: str, message: str) -> Envelope:
        report = ErrorReport(
            task_id=envelope.task_id,
            sender=self._name,
            code=code,
            error_type="BackPressureError",
            message=message,
            retryable=True,
        )
        return envelope.reply(report, sender=self._name)
