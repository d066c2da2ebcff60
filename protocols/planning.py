"""The planning family: a plan is a DAG of steps, proposed by the planner for a goal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import Field, model_validator

from protocols._base import Message, StepId, TaskId
from protocols.usage import Usage

MAX_PLAN_STEPS = 16


CheckKind = Literal[
    "min_chars", "max_chars", "contains", "not_contains", "regex", "json_schema", "tool"
]


class StepCheck(Message):
    """A deterministic check of a step's output, run by the reviewer before asking a model.

    ``min_chars``/``max_chars``: ``value`` is a number; ``contains``/``not_contains``: a
    substring (case-insensitive); ``regex``: a pattern that must match somewhere; ``json_schema``:
    a JSON Schema (as JSON text) the output must parse and validate against; ``tool``: the name
    of a predicate tool that receives the output and must succeed.
    """

    kind: CheckKind = Field(description="What kind of check.")
    value: str = Field(default="", max_length=8000, description="Its parameter (see above).")
    message: str = Field(
        default="", max_length=500, description="Feedback when it fails (default: generated)."
    )


class Step(Message):
    """One unit of work: which tool to use, on what input, after which other steps."""

    id: StepId = Field(description="Step identifier, unique within its plan.")
    description: str = Field(min_length=1, max_length=500, description="What the step must do.")
    tool: str = Field(min_length=1, max_length=64, description="Name of the tool that runs it.")
    input: str = Field(default="", max_length=2000, description="The tool's input.")
    depends_on: tuple[StepId, ...] = Field(
        default=(), max_length=MAX_PLAN_STEPS, description="Steps whose outputs this step needs."
    )
    requires_approval: bool = Field(
        default=False, description="Whether a human must approve the step before it runs."
    )
    checks: tuple[StepCheck, ...] = Field(
        default=(),
        max_length=16,
        description="Deterministic checks the reviewer runs on the result before any model.",
    )
    max_revisions: int | None = Field(
        default=None, ge=0, le=5, description="Overrides the task budget's max_revisions."
    )
    tools: tuple[str, ...] | None = Field(
        default=None,
        max_length=32,
        description="Tools the model may call in an 'answer' step; None: the executor's "
        "allow-list; empty: none, the model just writes the answer.",
    )


class Plan(Message):
    """A validated DAG of steps: ids unique, dependencies known, no cycles."""

    steps: tuple[Step, ...] = Field(
        min_length=1, max_length=MAX_PLAN_STEPS, description="Steps of the plan."
    )

    @model_validator(mode="after")
    def _check_dag(self) -> Plan:
        ids = [step.id for step in self.steps]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"step ids must be unique; repeated: {', '.join(duplicates)}")
        known = set(ids)
        for step in self.steps:
            unknown = [d for d in step.depends_on if d not in known]
            if unknown:
                raise ValueError(
                    f"step {step.id!r} depends on unknown step(s) {', '.join(unknown)}; "
                    f"known steps are {', '.join(ids)}"
                )
            if step.id in step.depends_on:
                raise ValueError(f"step {step.id!r} depends on itself")
        cycle = find_cycle({s.id: s.depends_on for s in self.steps})
        if cycle:
            raise ValueError(f"plan has a dependency cycle: {' -> '.join(cycle)}")
        return self

    def step(self, step_id: str) -> Step:
        """Returns the step with this id; raises ``KeyError`` when there is none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def ready(self, done: Iterable[str]) -> list[Step]:
        """Steps not yet done whose dependencies are all done, in plan order."""
        finished = set(done)
        return [
            s
            for s in self.steps
            if s.id not in finished and all(d in finished for d in s.depends_on)
        ]

    def sinks(self) -> list[Step]:
        """Steps no other step depends on: the plan's results."""
        needed = {d for s in self.steps for d in s.depends_on}
        return [s for s in self.steps if s.id not in needed]


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """One dependency cycle of ``{node: dependencies}`` as a list of ids (first id repeated at
    the end), or []."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = fully explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


class PlanRequested(Message):
    """Asks the planner for a plan for a goal (again, with feedback, after a rejection)."""

    type: Literal["plan.requested"] = "plan.requested"
    task_id: TaskId
    goal: str = Field(min_length=1, max_length=4000, description="The task's goal.")
    feedback: str | None = Field(
        default=None, max_length=4000, description="Why the previous plan was rejected."
    )
    max_steps: int = Field(default=4, ge=1, le=MAX_PLAN_STEPS, description="Largest plan allowed.")


class PlanProposed(Message):
    """The planner's answer: a validated plan and where it came from."""

    type: Literal["plan.proposed"] = "plan.proposed"
    task_id: TaskId
    plan: Plan
    source: Literal["model", "memory", "fallback"] = Field(
        description="model: planned now; memory: reused from a past task; "
        "fallback: the model gave no valid plan, so the goal runs as one step."
    )
    attempts: int = Field(default=1, ge=1, description="Model calls it took to get a valid plan.")
    notes: str = Field(default="", max_length=4000, description="Validation errors met on the way.")
    usage: Usage = Field(default_factory=Usage, description="Model use of this planning.")
