"""The task family: a goal is submitted, and the task ends completed or failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from protocols._base import Message, StepId, TaskId
from protocols.errors import ErrorReport
from protocols.planning import Plan, Step
from protocols.review import Decision
from protocols.usage import Usage


class Budget(Message):
    """Limits that stop a task from looping forever."""

    max_steps: int = Field(default=4, ge=1, le=16, description="Largest plan the task may run.")
    max_revisions: int = Field(
        default=1, ge=0, le=5, description="Revisions the reviewer may ask for, per step."
    )
    max_replans: int = Field(
        default=1, ge=0, le=5, description="Times the reviewer may send the task back to planning."
    )
    on_revisions_exhausted: Literal["accept", "fail"] = Field(
        default="accept",
        description="accept: keep the last result, marked unapproved in the trace; fail: end the "
        "task as failed.",
    )
    max_model_calls: int | None = Field(
        default=None, ge=1, description="Chat completions the whole task may make (None: no cap)."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Prompt + completion tokens over the task (None: no cap)."
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock seconds from submission until the task fails (None: no deadline).",
    )
    max_identical_tool_calls: int = Field(
        default=5,
        ge=1,
        le=20,
        description="The same tool with the same arguments this many times in one task is a loop: "
        "the task fails.",
    )


class TaskSubmitted(Message):
    """A user's goal, accepted for execution."""

    type: Literal["task.submitted"] = "task.submitted"
    task_id: TaskId
    goal: str = Field(min_length=1, max_length=4000, description="What the user wants done.")
    budget: Budget = Field(default_factory=Budget, description="Limits for this task.")
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    plan: Plan | None = Field(
        default=None,
        description="A declared workflow's steps: run as given, the planner is not asked. A "
        "reviewer reject then fails the task (there is no planner to send it back to).",
    )
    workflow: str | None = Field(
        default=None, max_length=128, description="Name of the declared workflow, if any."
    )
    forked_from: str | None = Field(
        default=None, max_length=200, description="task:step this task was forked from, if any."
    )

    @field_validator("goal")
    @classmethod
    def _goal_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("goal must contain text, not only whitespace")
        return value.strip()


class StepRecord(Message):
    """The outcome of one step as the task saw it."""

    step: Step
    output: str = Field(description="The accepted output of the step.")
    decision: Decision = Field(description="The reviewer's last decision on it.")
    feedback: str = Field(default="", description="The reviewer's last feedback.")
    revisions: int = Field(default=0, ge=0, description="How many times it was redone.")
    approved: bool = Field(description="Whether the reviewer approved the accepted output.")


class TraceEvent(Message):
    """One hop of a task: which message went where, and when."""

    seq: int = Field(ge=0, description="Position in the task's trace.")
    at: datetime
    sender: str
    topic: str
    message_type: str
    step_id: StepId | None = None
    summary: str = Field(default="", max_length=1000)
    usage: Usage | None = Field(
        default=None, description="Model use of this reply, with its prompt template hashes."
    )


class TaskCompleted(Message):
    """The task finished: its final answer, each step, and the trace of every hop."""

    type: Literal["task.completed"] = "task.completed"
    task_id: TaskId
    goal: str
    final_answer: str
    steps: tuple[StepRecord, ...]
    trace: tuple[TraceEvent, ...]
    usage: Usage = Field(default_factory=Usage, description="Model use over the whole task.")


class TaskFailed(Message):
    """The task stopped without an answer; what was done so far is kept."""

    type: Literal["task.failed"] = "task.failed"
    task_id: TaskId
    goal: str
    reason: str
    error: ErrorReport | None = None
    steps: tuple[StepRecord, ...] = ()
    trace: tuple[TraceEvent, ...] = ()
    usage: Usage = Field(default_factory=Usage, description="Model use over the whole task.")
    cancelled: bool = Field(default=False, description="True when a cancel ended the task.")
