"""The approvals family: a step waits for a human, and a human decides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from protocols._base import Message, StepId, TaskId
from protocols.planning import Step


class ApprovalRequested(Message):
    """A step needs a human's decision before it runs."""

    type: Literal["approval.requested"] = "approval.requested"
    task_id: TaskId
    step: Step
    reason: str = Field(max_length=2000, description="Why approval is needed (plan, tool policy).")
    deadline: datetime | None = Field(default=None, description="When the default outcome applies.")
    escalation: int = Field(
        default=0, ge=0, le=10, description="0 for the request; n for its n-th escalation."
    )


class ApprovalDecided(Message):
    """A human's decision on a step: approve, reject (with a reason), or edit its input."""

    type: Literal["approval.decided"] = "approval.decided"
    task_id: TaskId
    step_id: StepId
    decision: Literal["approve", "reject", "edit"]
    decided_by: str = Field(min_length=1, max_length=200, description="Who decided.")
    reason: str = Field(default="", max_length=2000, description="Why; the planner sees it.")
    edited_input: str | None = Field(
        default=None, max_length=2000, description="The step's new input when decision is edit."
    )
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
