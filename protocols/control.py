"""The control family: cancel a task, and heartbeats that say a component is alive."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from protocols._base import Message, TaskId


class CancelTask(Message):
    """Stop a task: in-flight steps are abandoned and recorded."""

    type: Literal["control.cancel"] = "control.cancel"
    task_id: TaskId
    reason: str = Field(default="", max_length=2000)
    requested_by: str = Field(default="user", min_length=1, max_length=200)


class Heartbeat(Message):
    """A component is alive and how busy it is."""

    type: Literal["control.heartbeat"] = "control.heartbeat"
    component: str = Field(min_length=1, max_length=200)
    in_flight: int = Field(default=0, ge=0, description="Messages it is handling now.")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
