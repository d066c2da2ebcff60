"""All messages as one discriminated union, the envelope every message travels in, and topics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from protocols._base import Message
from protocols.approvals import ApprovalDecided, ApprovalRequested
from protocols.control import CancelTask, Heartbeat
from protocols.errors import ErrorReport, MessageValidationError
from protocols.execution import StepAssigned, StepResult
from protocols.planning import PlanProposed, PlanRequested
from protocols.review import ReviewRequested, ReviewVerdict
from protocols.tasks import TaskCompleted, TaskFailed, TaskSubmitted

AnyMessage = Annotated[
    TaskSubmitted
    | TaskCompleted
    | TaskFailed
    | PlanRequested
    | PlanProposed
    | StepAssigned
    | StepResult
    | ReviewRequested
    | ReviewVerdict
    | ApprovalRequested
    | ApprovalDecided
    | CancelTask
    | Heartbeat
    | ErrorReport,
    Field(discriminator="type"),
]
"""Every message troupe sends, told apart by its ``type`` field."""

MESSAGE_ADAPTER: Final[TypeAdapter[AnyMessage]] = TypeAdapter(AnyMessage)

SCHEMA_VERSION: Final = "1.2"
"""major.minor: within one major version a change only adds optional fields (see the schema
snapshot test), so every 1.x consumer parses every 1.y message it knows the type of."""

Provenance = Literal["user", "agent", "tool", "memory", "external"]


class Topics:
    """Well-known topic names."""

    PLANNER: Final = "agents.planner"
    EXECUTOR: Final = "agents.executor"
    REVIEWER: Final = "agents.reviewer"
    TASK_EVENTS: Final = "tasks.events"
    CONTROL: Final = "tasks.control"
    APPROVALS: Final = "tasks.approvals"
    ESCALATIONS: Final = "tasks.approvals.escalated"


def _new_id() -> str:
    return uuid.uuid4().hex


class Envelope(Message):
    """A message in transit: who sent it, where, why, and when."""

    message_id: str = Field(default_factory=_new_id, description="Unique id of this envelope.")
    task_id: str | None = Field(default=None, description="Correlation: the task it belongs to.")
    causation_id: str | None = Field(
        default=None, description="The message_id of the message that caused this one."
    )
    sender: str = Field(min_length=1, max_length=64)
    topic: str = Field(min_length=1, max_length=128)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    attempt: int = Field(default=1, ge=1, description="Delivery attempt.")
    schema_version: str = Field(
        default=SCHEMA_VERSION, pattern=r"^\d+\.\d+$", description="major.minor of the sender."
    )
    provenance: Provenance = Field(default="agent", description="Who produced the content.")
    payload: AnyMessage

    @field_validator("schema_version")
    @classmethod
    def _same_major(cls, value: str) -> str:
        major = value.split(".", 1)[0]
        if major != SCHEMA_VERSION.split(".", 1)[0]:
            raise ValueError(
                f"schema version {value} is not readable by this build (speaks "
                f"{SCHEMA_VERSION}); messages must share the major version"
            )
        return value

    @classmethod
    def wrap(
        cls,
        payload: AnyMessage,
        *,
        sender: str,
        topic: str,
        causation_id: str | None = None,
        provenance: Provenance = "agent",
        attempt: int = 1,
    ) -> Envelope:
        """Puts a message in a new envelope, taking the task id from the payload."""
        return cls(
            task_id=getattr(payload, "task_id", None),
            causation_id=causation_id,
            sender=sender,
            topic=topic,
            provenance=provenance,
            attempt=attempt,
            payload=payload,
        )

    def reply(self, payload: AnyMessage, *, sender: str) -> Envelope:
        """An envelope answering this one: same topic and task, caused by this message."""
        return Envelope.wrap(payload, sender=sender, topic=self.topic, causation_id=self.message_id)


def parse_message(data: str | bytes | dict[str, Any]) -> AnyMessage:
    """Parses JSON text or a dict into a message.

    Raises:
        MessageValidationError: listing each invalid field and what is wrong with it.
    """
    try:
        if isinstance(data, dict):
            return MESSAGE_ADAPTER.validate_python(data)
        return MESSAGE_ADAPTER.validate_json(data)
    except ValidationError as exc:
        raise MessageValidationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: ``field.path: what is wrong``."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(message)"
        lines.append(f"{where}: {err['msg']}")
    return f"invalid message ({len(lines)} problem(s)): " + "; ".join(lines)
