"""The execution family: the coordinator assigns a step, an executor returns its result."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocols._base import Message, StepId, TaskId
from protocols.planning import Step
from protocols.usage import Usage


class ToolCall(Message):
    """One tool invocation made while running a step, with what it returned."""

    tool: str
    arguments: str = Field(description="The arguments as the tool received them.")
    output: str = Field(default="", description="What the tool returned.")
    ok: bool = Field(description="Whether the tool succeeded.")


class Recollection(Message):
    """An episode of another task that memory recalled for a step: context for the prompt,
    quoted as data, never followed as instructions."""

    kind: str = Field(max_length=40, description="The episode's kind (observation, ...).")
    provenance: str = Field(max_length=40, description="Where it came from (agent, tool, ...).")
    content: str = Field(max_length=4000)
    task_id: TaskId | None = Field(default=None, description="The task it was recorded in.")
    relevance: float = Field(ge=0, le=1, description="How well it matched the step.")


class StepAssigned(Message):
    """Asks an executor to run one step."""

    type: Literal["step.assigned"] = "step.assigned"
    task_id: TaskId
    goal: str = Field(min_length=1, max_length=4000)
    step: Step
    inputs: dict[StepId, str] = Field(
        default_factory=dict, description="Outputs of the steps this one depends on."
    )
    feedback: str | None = Field(
        default=None, max_length=4000, description="Reviewer feedback on the previous attempt."
    )
    attempt: int = Field(default=1, ge=1, description="1 for the first run, +1 per revision.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=200,
        description="task:step:attempt; tools de-duplicate side effects by it (a re-sent "
        "attempt after a crash carries the same key).",
    )
    recalled: tuple[Recollection, ...] | None = Field(
        default=None,
        max_length=20,
        description="Episodes of other tasks recalled for this step by the coordinator (one "
        "memory call per task instead of one per step); None: the executor recalls them.",
    )


class StepResult(Message):
    """What an executor produced for a step."""

    type: Literal["step.result"] = "step.result"
    task_id: TaskId
    step_id: StepId
    output: str = Field(max_length=20000)
    ok: bool = Field(description="False when the step could not be carried out.")
    tool_calls: tuple[ToolCall, ...] = Field(default=(), description="Evidence: tools used.")
    attempt: int = Field(default=1, ge=1)
    usage: Usage = Field(default_factory=Usage, description="Model use of this attempt.")
