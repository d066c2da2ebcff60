"""The review family: the reviewer judges a step result against the goal and the evidence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocols._base import Message, StepId, TaskId
from protocols.execution import StepResult, ToolCall
from protocols.planning import Step
from protocols.usage import Usage

Decision = Literal["approve", "revise", "reject"]


class ReviewRequested(Message):
    """Asks the reviewer to judge one step's result."""

    type: Literal["review.requested"] = "review.requested"
    task_id: TaskId
    goal: str = Field(min_length=1, max_length=4000)
    step: Step
    result: StepResult
    inputs: dict[StepId, str] = Field(
        default_factory=dict, description="Outputs of the steps this one depended on."
    )
    evidence: tuple[ToolCall, ...] = Field(
        default=(), description="Successful tool calls behind those outputs."
    )
    final: bool = Field(default=False, description="True when the result is the final answer.")


class ReviewVerdict(Message):
    """approve: keep it; revise: redo the step with the feedback; reject: plan again."""

    type: Literal["review.verdict"] = "review.verdict"
    task_id: TaskId
    step_id: StepId
    decision: Decision
    feedback: str = Field(default="", max_length=2000, description="What to change, concretely.")
    checked_by: Literal["rule", "model"] = Field(
        description="rule: a deterministic check decided; model: the reviewer model did."
    )
    usage: Usage = Field(default_factory=Usage, description="Model use of this review.")
