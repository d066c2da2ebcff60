"""The planner: turns a goal into a validated plan, reusing one that worked before."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from agents._model import ModelClient, UsageMeter, schema_token_bound
from agents._prompts import load_prompt
from agents._structured import ask_json, clip, object_schema, text_field
from agents._toolkit import ToolRegistry
from agents._tools import MODEL_TOOL, describe_tools, plan_tools
from memory import EpisodicMemory, RecallQuery
from protocols import (
    AgentError,
    AnyMessage,
    Plan,
    PlanProposed,
    PlanRequested,
    Step,
    Usage,
    describe_validation_error,
)

NAME = "planner"


class _DraftStep(BaseModel):
    description: str
    tool: str
    input: str
    depends_on: list[int]


class _Draft(BaseModel):
    steps: list[_DraftStep]


def goal_key(goal: str) -> str:
    """A stable key for "the same goal": case and spacing do not matter."""
    return hashlib.sha256(" ".join(goal.lower().split()).encode()).hexdigest()[:16]


def goal_tag(goal: str) -> str:
    """The tag a plan episode carries for its goal (``goal:<goal_key>``): the planner recalls
    plans by it, so memory returns only plans of the same goal (usually none) instead of the
    plans whose text is closest."""
    return f"goal:{goal_key(goal)}"


def plan_schema(tools: list[str], *, max_steps: int, max_chars: int) -> dict[str, Any]:
    """The JSON schema a plan draft must follow, built so that every valid draft is a valid plan.

    Steps are numbered by position. A plan of ``n`` steps is a tuple whose step ``i`` may only
    name steps ``1..i-1`` in ``depends_on`` (an enum), and the plan is one of the tuples of length
    1 to ``max_steps``. Constrained decoding then cannot produce a cycle, a forward or unknown
    reference, or an unknown tool; and every string and array is bounded, so a small model
    always finishes the document.
    """

    def step(number: int) -> dict[str, Any]:
        earlier = list(range(1, number))
        depends_on: dict[str, Any] = {"type": "array", "maxItems": min(len(earlier), 3)}
        depends_on["items"] = (
            {"type": "integer", "enum": earlier} if earlier else {"type": "integer"}
        )
        return object_schema(
            {
                "description": text_field(max_chars, min_chars=1),
                "tool": {"type": "string", "enum": tools},
                "input": text_field(max_chars),
                "depends_on": depends_on,
            }
        )

    plans = [
        {"type": "array", "prefixItems": [step(i) for i in range(1, n + 1)], "items": False}
        for n in range(1, max_steps + 1)
    ]
    return object_schema({"steps": {"anyOf": plans}})


def draft_to_plan(data: dict[str, Any], *, tools: list[str], max_steps: int) -> Plan:
    """Checks a model's draft and turns it into a ``Plan`` with ids ``s1..sN``.

    Raises:
        AgentError: saying what is wrong, in words the model can act on when asked again.
    """
    try:
        draft = _Draft.model_validate(data)
    except ValidationError as exc:
        raise AgentError(describe_validation_error(exc), code="invalid_plan") from None
    if not 1 <= len(draft.steps) <= max_steps:
        raise AgentError(f"a plan needs 1 to {max_steps} steps", code="invalid_plan")
    steps: list[Step] = []
    same_as: dict[int, str] = {}  # step number -> id of the step it repeats (or its own)
    for number, item in enumerate(draft.steps, start=1):
        if item.tool not in tools:
            raise AgentError(
                f"step {number} uses unknown tool {item.tool!r}; use one of {', '.join(tools)}",
                code="invalid_plan",
            )
        missing = [d for d in item.depends_on if d < 1]
        if missing:
            raise AgentError(
                f"step {number} depends on step {missing[0]}; steps are numbered from 1",
                code="invalid_plan",
            )
        later = [d for d in item.depends_on if d >= number]
        if later:
            raise AgentError(
                f"step {number} depends on step {later[0]}, which is not earlier; a step may "
                "only depend on steps before it",
                code="invalid_plan",
            )
        step = Step(
            id=f"s{len(steps) + 1}",
            description=item.description.strip() or f"step {number}",
            tool=item.tool,
            input=item.input.strip(),
            depends_on=tuple(sorted({same_as[d] for d in item.depends_on if d in same_as})),
        )
        # Small models repeat a step verbatim; running it twice would only double the cost.
        repeated = next((s for s in steps if _same_work(s, step)), None)
        if repeated is None:
            steps.append(step)
        same_as[number] = repeated.id if repeated else step.id
    return Plan(steps=tuple(steps))


def _same_work(a: Step, b: Step) -> bool:
    return (a.description, a.tool, a.input, a.depends_on) == (
        b.description,
        b.tool,
        b.input,
        b.depends_on,
    )


class Planner:
    """Answers ``PlanRequested`` with ``PlanProposed``.

    Args:
        model: Chat model for planning.
        memory: Episodic memory to find plans that worked before.
        tools: The team's tools.
        allowed: The tools executors may run (plans name only these, and ``answer``); None
            means every registered tool.
        namespace: Memory namespace.
        max_attempts: Model calls before falling back to a one-step plan.
        max_chars: Longest free-text field in a draft.
    """

    name = NAME

    def __init__(
        self,
        model: ModelClient,
        memory: EpisodicMemory,
        tools: ToolRegistry,
        *,
        allowed: Iterable[str] | None = None,
        namespace: str = "default",
        max_attempts: int = 2,
        max_chars: int = 120,
    ):
        self._model = model
        self._memory = memory
        self._tools = tools
        self._plan_tools = plan_tools(tools, allowed)
        self._namespace = namespace
        self._max_attempts = max_attempts
        self._max_chars = max_chars
        # The plan schema and its token bound by ``max_steps`` (at most MAX_PLAN_STEPS): the
        # bound walks every alternative of the schema, ~0.1 ms a plan for 5 steps.
        self._schemas: dict[int, tuple[dict[str, Any], int]] = {}

    async def handle(self, message: AnyMessage) -> AnyMessage:
        """Plans for a ``PlanRequested``; any other message is an error."""
        if not isinstance(message, PlanRequested):
            raise AgentError(f"{NAME} cannot handle {message.type!r}", code="unhandled_message")
        if message.feedback is None:
            reused = await self._recall_plan(message)
            if reused is not None:
                return reused
        return await self._plan_with_model(message)

    async def _recall_plan(self, request: PlanRequested) -> PlanProposed | None:
        """A plan that completed the same goal before, if memory has one that still fits."""
        found = await self._memory.recall(
            RecallQuery(
                text=request.goal,
                namespace=self._namespace,
                k=5,
                kinds=("plan",),
                tags=(goal_tag(request.goal),),
            )
        )
        key = goal_key(request.goal)
        for scored in found:
            meta = scored.episode.metadata
            if meta.get("goal_key") != key or meta.get("outcome") != "completed":
                continue
            try:
                plan = Plan.model_validate_json(meta["plan"])
            except (KeyError, ValidationError):
                continue  # an old or damaged record: plan afresh rather than trust it
            if len(plan.steps) <= request.max_steps and all(
                s.tool in self._plan_tools for s in plan.steps
            ):
                return PlanProposed(
                    task_id=request.task_id,
                    plan=plan,
                    source="memory",
                    notes=f"reused the plan of task {scored.episode.task_id}",
                )
        return None

    def _schema(self, max_steps: int) -> tuple[dict[str, Any], int]:
        cached = self._schemas.get(max_steps)
        if cached is None:
            schema = plan_schema(self._plan_tools, max_steps=max_steps, max_chars=self._max_chars)
            cached = self._schemas[max_steps] = (schema, schema_token_bound(schema))
        return cached

    async def _plan_with_model(self, request: PlanRequested) -> PlanProposed:
        tools = self._plan_tools
        schema, max_tokens = self._schema(request.max_steps)
        meter = UsageMeter(self._model)
        errors: list[str] = []
        for attempt in range(1, self._max_attempts + 1):
            user = self._user_prompt(request, errors[-1] if errors else None)
            try:
                data, _ = await ask_json(
                    meter,
                    prompt=load_prompt("planner"),
                    system_values={
                        "max_steps": str(request.max_steps),
                        "tools": describe_tools(self._tools, tools[1:]),
                    },
                    user=user,
                    schema=schema,
                    name="plan",
                    max_tokens=max_tokens,
                )
                plan = draft_to_plan(data, tools=tools, max_steps=request.max_steps)
            except AgentError as exc:
                if exc.code not in ("invalid_plan", "bad_model_output"):
                    raise
                errors.append(f"attempt {attempt}: {exc.message}")
                continue
            return PlanProposed(
                task_id=request.task_id,
                plan=plan,
                source="model",
                attempts=attempt,
                notes=clip("; ".join(errors), 4000),
                usage=meter.usage,
            )
        return self._fallback(request, errors, usage=meter.usage)

    def _user_prompt(self, request: PlanRequested, last_error: str | None) -> str:
        parts = [f"Goal: {request.goal}"]
        if request.feedback:
            parts.append(f"The previous plan was rejected: {clip(request.feedback, 400)}")
        if last_error:
            parts.append(f"Your last plan was invalid ({clip(last_error, 300)}). Fix it.")
        return "\n".join(parts)

    def _fallback(self, request: PlanRequested, errors: list[str], *, usage: Usage) -> PlanProposed:
        """The model gave no valid plan: run the goal as one model step, and say so."""
        step = Step(id="s1", description=clip(request.goal, 500), tool=MODEL_TOOL, input="")
        return PlanProposed(
            task_id=request.task_id,
            plan=Plan(steps=(step,)),
            source="fallback",
            attempts=self._max_attempts,
            notes=clip("; ".join(errors), 4000),
            usage=usage,
        )
