"""A consumer for bus tests: used in-process as is, and as a Ray actor via ``ray.remote``."""

from __future__ import annotations

import asyncio

from protocols import Envelope, ErrorReport, StepAssigned, StepResult


class RecordingConsumer:
    """Records every envelope it gets and answers according to ``behaviour``.

    echo: a StepResult naming this consumer; error: a retryable ErrorReport; silent: no reply;
    slow: echo after two seconds; crash: raise.
    """

    def __init__(self, name: str, behaviour: str = "echo"):
        self.name = name
        self.behaviour = behaviour
        self._seen: list[str] = []

    async def deliver(self, envelope: Envelope) -> Envelope | None:
        payload = envelope.payload
        assert isinstance(payload, StepAssigned)
        self._seen.append(payload.step.id)
        if self.behaviour == "crash":
            raise RuntimeError("handler bug")
        if self.behaviour == "silent":
            return None
        if self.behaviour == "error":
            report = ErrorReport(
                task_id=payload.task_id,
                sender=self.name,
                code="model_unavailable",
                error_type="AgentError",
                message="try later",
                retryable=True,
            )
            return envelope.reply(report, sender=self.name)
        if self.behaviour == "slow":
            await asyncio.sleep(2)
        result = StepResult(
            task_id=payload.task_id, step_id=payload.step.id, output=self.name, ok=True
        )
        return envelope.reply(result, sender=self.name)

    def seen(self) -> list[str]:
        return list(self._seen)
