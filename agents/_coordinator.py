"""The coordinator: a thin state machine that runs one task through plan, steps and review.

It talks to agents only through the bus. Each transition is its own small method:
plan -> run ready steps (in parallel) -> review each -> revise / replan / accept -> final answer.
Budgets bound every loop. Message-level retries (an agent answered with a retryable
``ErrorReport``) live here; transport retries of model calls live in the model client.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar, assert_never

from agents._planner import goal_key
from agents._structured import clip
from agents._tools import MODEL_TOOL
from memory import Episode, EpisodicMemory
from protocols import (
    AnyMessage,
    ApprovalDecided,
    ApprovalRequested,
    Bus,
    CancelTask,
    DeliveryError,
    Envelope,
    ErrorReport,
    Heartbeat,
    Plan,
    PlanProposed,
    PlanRequested,
    RemoteAgentError,
    ReviewRequested,
    ReviewVerdict,
    Step,
    StepAssigned,
    StepRecord,
    StepResult,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskSubmitted,
    ToolCall,
    Topics,
    TraceEvent,
    TroupeError,
)

NAME = "coordinator"
FINAL_STEP = "final"
_M = TypeVar("_M")


class _Rejected(Exception):
    """The reviewer rejected a step: the task goes back to planning with this feedback."""

    def __init__(self, feedback: str):
        super().__init__(feedback)
        self.feedback = feedback


@dataclass
class _Run:
    """Everything the coordinator knows about one task while it runs."""

    task: TaskSubmitted
    root_id: str
    trace: list[TraceEvent] = field(default_factory=list)
    records: dict[str, StepRecord] = field(default_factory=dict)
    results: dict[str, StepResult] = field(default_factory=dict)
    plan: Plan | None = None


class Coordinator:
    """Runs tasks to ``TaskCompleted`` or ``TaskFailed``.

    Args:
        bus: How to reach the planner, executors and reviewer.
        memory: Where plans and task summaries are remembered for next time.
        namespace: Memory namespace.
        request_timeout_s: Longest wait for one agent's reply.
        max_delivery_attempts: Tries per request when an agent fails in a retryable way.
    """

    name = NAME

    def __init__(
        self,
        bus: Bus,
        memory: EpisodicMemory,
        *,
        namespace: str = "default",
        request_timeout_s: float = 300.0,
        max_delivery_attempts: int = 2,
    ):
        self._bus = bus
        self._memory = memory
        self._namespace = namespace
        self._timeout = request_timeout_s
        self._attempts = max_delivery_attempts

    async def run(self, task: TaskSubmitted) -> TaskCompleted | TaskFailed:
        """Runs one task to its end; never raises for a failure of the task itself."""
        submitted = Envelope.wrap(task, sender="user", topic=Topics.TASK_EVENTS, provenance="user")
        run = _Run(task=task, root_id=submitted.message_id)
        self._trace(run, submitted)
        try:
            final = await self._plan_and_execute(run)
        except TroupeError as exc:
            outcome: TaskCompleted | TaskFailed = self._failed(run, exc)
        else:
            outcome = self._completed(run, final)
        await self._remember(run, outcome)
        await self._announce(run, outcome)
        return outcome

    # -- transitions -------------------------------------------------------------------------

    async def _plan_and_execute(self, run: _Run) -> StepRecord:
        budget = run.task.budget
        feedback: str | None = None
        for _ in range(budget.max_replans + 1):
            run.plan = await self._plan(run, feedback)
            run.records, run.results = {}, {}
            try:
                await self._execute(run, run.plan)
                return await self._finish(run, run.plan)
            except _Rejected as rejected:
                feedback = rejected.feedback
        raise TaskError(
            f"the reviewer rejected the work {budget.max_replans + 1} time(s) and the replan "
            f"budget (max_replans={budget.max_replans}) is spent; last feedback: {feedback}",
            code="replan_budget_spent",
        )

    async def _plan(self, run: _Run, feedback: str | None) -> Plan:
        request = PlanRequested(
            task_id=run.task.task_id,
            goal=run.task.goal,
            feedback=feedback,
            max_steps=run.task.budget.max_steps,
        )
        proposed = await self._ask(run, request, Topics.PLANNER, PlanProposed)
        return proposed.plan

    async def _execute(self, run: _Run, plan: Plan) -> None:
        """Runs the plan's steps, every ready step at once, until all are done."""
        while len(run.records) < len(plan.steps):
            ready = plan.ready(run.records)
            outcomes = await asyncio.gather(
                *(self._run_step(run, step) for step in ready), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                run.records[outcome.step.id] = outcome

    async def _finish(self, run: _Run, plan: Plan) -> StepRecord:
        """The final answer: one more model step over every step's result, reviewed too."""
        final = Step(
            id=FINAL_STEP,
            description=f"Write the final answer to the goal: {clip(run.task.goal, 400)}",
            tool=MODEL_TOOL,
            depends_on=tuple(s.id for s in plan.steps),
        )
        sinks = [s.id for s in plan.sinks()]
        return await self._run_step(run, final, final_answer=True, evidence_from=sinks)

    async def _run_step(
        self,
        run: _Run,
        step: Step,
        *,
        final_answer: bool = False,
        evidence_from: list[str] | None = None,
    ) -> StepRecord:
        """Execute, review, and revise within the budget; raises ``_Rejected`` on reject.

        The reviewer sees the tool calls that produced the outputs of ``evidence_from`` (by
        default the step's dependencies; for the final answer, the plan's results).
        """
        budget = run.task.budget
        inputs = {d: run.records[d].output for d in step.depends_on}
        sources = step.depends_on if evidence_from is None else evidence_from
        evidence = tuple(
            call for d in sources if (call := _last_tool_result(run.results[d])) is not None
        )
        feedback: str | None = None
        for attempt in range(1, budget.max_revisions + 2):
            assigned = StepAssigned(
                task_id=run.task.task_id,
                goal=run.task.goal,
                step=step,
                inputs=inputs,
                feedback=feedback,
                attempt=attempt,
            )
            result = await self._ask(run, assigned, Topics.EXECUTOR, StepResult)
            review = ReviewRequested(
                task_id=run.task.task_id,
                goal=run.task.goal,
                step=step,
                result=result,
                inputs=inputs,
                evidence=evidence,
                final=final_answer,
            )
            verdict = await self._ask(run, review, Topics.REVIEWER, ReviewVerdict)
            if verdict.decision == "approve":
                run.results[step.id] = result
                return _record(step, result, verdict, approved=True)
            if verdict.decision == "reject":
                raise _Rejected(f"step {step.id} ({step.description}): {verdict.feedback}")
            feedback = verdict.feedback or "the reviewer asked for a better result"
        return self._revisions_spent(run, step, result, verdict)

    def _revisions_spent(
        self, run: _Run, step: Step, result: StepResult, verdict: ReviewVerdict
    ) -> StepRecord:
        budget = run.task.budget
        if not result.ok or budget.on_revisions_exhausted == "fail":
            raise TaskError(
                f"step {step.id} was revised {budget.max_revisions} time(s) without approval "
                f"(max_revisions={budget.max_revisions}); last feedback: {verdict.feedback}",
                code="revision_budget_spent",
            )
        run.results[step.id] = result
        return _record(step, result, verdict, approved=False)

    # -- messaging ---------------------------------------------------------------------------

    async def _ask(self, run: _Run, payload: AnyMessage, topic: str, expected: type[_M]) -> _M:
        """A request through the bus, traced both ways, retried when the agent says it may be."""
        for attempt in range(1, self._attempts + 1):
            envelope = Envelope.wrap(
                payload, sender=self.name, topic=topic, causation_id=run.root_id
            ).model_copy(update={"attempt": attempt})
            self._trace(run, envelope)
            try:
                reply = await self._bus.request(envelope, timeout=self._timeout)
            except RemoteAgentError as exc:
                self._trace_error(run, topic, exc.report)
                if not exc.retryable or attempt == self._attempts:
                    raise
                continue
            self._trace(run, reply)
            if not isinstance(reply.payload, expected):
                raise DeliveryError(
                    f"{topic} answered {reply.payload.type!r} where {expected.__name__} was due",
                    code="unexpected_reply",
                    retryable=False,
                )
            return reply.payload
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _trace(self, run: _Run, envelope: Envelope) -> None:
        payload = envelope.payload
        run.trace.append(
            TraceEvent(
                seq=len(run.trace),
                at=envelope.created_at,
                sender=envelope.sender,
                topic=envelope.topic,
                message_type=payload.type,
                step_id=_step_of(payload),
                summary=clip(_summary(payload), 1000),
            )
        )

    def _trace_error(self, run: _Run, topic: str, report: ErrorReport) -> None:
        run.trace.append(
            TraceEvent(
                seq=len(run.trace),
                at=datetime.now(UTC),
                sender=report.sender,
                topic=topic,
                message_type=report.type,
                summary=clip(f"{report.code}: {report.message}", 1000),
            )
        )

    # -- outcomes ----------------------------------------------------------------------------

    def _completed(self, run: _Run, final: StepRecord) -> TaskCompleted:
        return TaskCompleted(
            task_id=run.task.task_id,
            goal=run.task.goal,
            final_answer=final.output,
            steps=(*run.records.values(), final),
            trace=tuple(run.trace),
        )

    def _failed(self, run: _Run, exc: TroupeError) -> TaskFailed:
        return TaskFailed(
            task_id=run.task.task_id,
            goal=run.task.goal,
            reason=exc.message,
            error=ErrorReport.from_exception(exc, sender=self.name, task_id=run.task.task_id),
            steps=tuple(run.records.values()),
            trace=tuple(run.trace),
        )

    async def _announce(self, run: _Run, outcome: TaskCompleted | TaskFailed) -> None:
        """Tells watchers of ``tasks.events``; a broken watcher does not change the outcome."""
        envelope = Envelope.wrap(
            outcome, sender=self.name, topic=Topics.TASK_EVENTS, causation_id=run.root_id
        )
        # The outcome is decided and returned either way; watchers can read the trace.
        with contextlib.suppress(TroupeError):
            await self._bus.publish(envelope)

    async def _remember(self, run: _Run, outcome: TaskCompleted | TaskFailed) -> None:
        """The plan (reusable next time if it worked) and a summary of the task."""
        completed = isinstance(outcome, TaskCompleted)
        common = {"agent": self.name, "namespace": self._namespace, "task_id": run.task.task_id}
        episodes = [
            Episode.create(
                kind="task_summary",
                content=clip(_task_summary(outcome), 4000),
                importance=0.8,
                tags=("completed" if completed else "failed",),
                trusted=True,
                **common,  # type: ignore[arg-type]
            )
        ]
        if run.plan is not None:
            episodes.append(
                Episode.create(
                    kind="plan",
                    content=clip(f"plan for: {run.task.goal}", 4000),
                    importance=0.7 if completed else 0.3,
                    trusted=True,
                    metadata={
                        "goal_key": goal_key(run.task.goal),
                        "outcome": "completed" if completed else "failed",
                        "plan": run.plan.model_dump_json(),
                    },
                    **common,  # type: ignore[arg-type]
                )
            )
        await self._memory.remember(episodes)


def _record(
    step: Step, result: StepResult, verdict: ReviewVerdict, *, approved: bool
) -> StepRecord:
    return StepRecord(
        step=step,
        output=result.output,
        decision=verdict.decision,
        feedback=verdict.feedback,
        revisions=result.attempt - 1,
        approved=approved,
    )


def _last_tool_result(result: StepResult) -> ToolCall | None:
    """The successful tool call a step's accepted output rests on, if any."""
    return next((c for c in reversed(result.tool_calls) if c.ok), None)


def _step_of(payload: AnyMessage) -> str | None:
    if isinstance(payload, StepAssigned | ReviewRequested):
        return payload.step.id
    if isinstance(payload, StepResult | ReviewVerdict):
        return payload.step_id
    return None


def _summary(payload: AnyMessage) -> str:
    match payload:
        case TaskSubmitted():
            return payload.goal
        case PlanRequested():
            return f"plan (feedback: {payload.feedback})" if payload.feedback else "plan"
        case PlanProposed():
            steps = "; ".join(f"{s.id} {s.tool}: {s.description}" for s in payload.plan.steps)
            return f"{payload.source} plan, {len(payload.plan.steps)} step(s): {steps}"
        case StepAssigned():
            return f"attempt {payload.attempt}: {payload.step.tool} {payload.step.input}".strip()
        case StepResult():
            return f"{'ok' if payload.ok else 'failed'}: {payload.output}"
        case ReviewRequested():
            return "review final answer" if payload.final else "review step"
        case ReviewVerdict():
            return f"{payload.decision} by {payload.checked_by}: {payload.feedback}"
        case TaskCompleted():
            return payload.final_answer
        case TaskFailed():
            return payload.reason
        case ErrorReport():
            return f"{payload.code}: {payload.message}"
        case ApprovalRequested() | ApprovalDecided() | CancelTask() | Heartbeat():
            return payload.type
    assert_never(payload)


def _task_summary(outcome: TaskCompleted | TaskFailed) -> str:
    if isinstance(outcome, TaskCompleted):
        return f"Task: {outcome.goal}\nAnswer: {outcome.final_answer}"
    return f"Task: {outcome.goal}\nFailed: {outcome.reason}"
