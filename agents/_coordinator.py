"""The coordinator: a durable state machine that runs tasks through plan, steps and review.

It talks to agents only through the bus, and writes every reply it gets and every decision it
makes to the task's journal *before* acting on it. A task's life:

    submitted -> planning -> running <-> awaiting_approval / reviewing -> completed | failed
                                                                         | cancelled

Recovery (a restarted coordinator, ``recover``) re-executes each unfinished task from its
start against ``History``: replies the journal holds are used instead of being asked for, so
committed steps never run again; an attempt that was in flight is sent again once per crash
with the same idempotency key (``task:step:attempt``), which tools use to de-duplicate side
effects. ``replay`` is the same re-execution with no bus at all (zero model calls).

Budgets bound every loop: steps, revisions, replans, model calls, tokens, wall-clock deadline
and identical tool calls. Message-level retries (an agent answered with a retryable
``ErrorReport``, or no member answered) live here; transport retries of model calls live in
the model client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, assert_never

from agents._executor import recall_query, recollections, relevant
from agents._history import Gate, History
from agents._journal import Journal
from agents._journal_models import (
    TERMINAL,
    JournalPayload,
    RetentionPolicy,
    StateChanged,
    StepAbandoned,
    StepCommitted,
    StepStarted,
    TaskInfo,
    TaskStatus,
    idempotency_key,
)
from agents._planner import goal_key, goal_tag
from agents._settings import ApprovalSettings
from agents._structured import clip
from agents._tools import MODEL_TOOL
from memory import Episode, EpisodicMemory
from protocols import (
    AnyMessage,
    ApprovalDecided,
    ApprovalRequested,
    Bus,
    CancelTask,
    ConfigurationError,
    DeliveryError,
    Envelope,
    ErrorReport,
    Heartbeat,
    Plan,
    PlanProposed,
    PlanRequested,
    Recollection,
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
    Usage,
)

logger = logging.getLogger(__name__)

Durability = Literal["now", "soon", "later", "defer"]
"""When a journal write reaches the disk (see ``Coordinator._write``)."""

NAME = "coordinator"
FINAL_STEP = "final"
_M = TypeVar("_M")
Outcome = TaskCompleted | TaskFailed
_REFERENCE = re.compile(r"\{\{\s*steps\.([A-Za-z0-9][A-Za-z0-9_-]{0,31})\s*\}\}")


class _Rejected(Exception):
    """The reviewer (or a human) rejected a step: the task goes back to planning."""

    def __init__(self, feedback: str):
        super().__init__(feedback)
        self.feedback = feedback


@dataclass
class _Run:
    """Everything the coordinator knows about one task while it runs."""

    task: TaskSubmitted
    history: History
    live: bool
    trace: list[TraceEvent] = field(default_factory=list)
    records: dict[str, StepRecord] = field(default_factory=dict)
    results: dict[str, StepResult] = field(default_factory=dict)
    plan: Plan | None = None
    plan_round: int = 0
    status: TaskStatus = "submitted"
    planning: bool = False
    reviewing: int = 0
    usage: Usage = field(default_factory=Usage)
    attempts: dict[str, int] = field(default_factory=dict)
    gates: dict[str, int] = field(default_factory=dict)
    tool_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    pending: dict[str, ApprovalRequested] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[ApprovalDecided]] = field(default_factory=dict)
    early: dict[str, ApprovalDecided] = field(default_factory=dict)
    stop: CancelTask | TaskError | None = None
    inner: asyncio.Future[StepRecord] | None = None
    done: asyncio.Future[Outcome] | None = None
    written: set[int] = field(default_factory=set)
    recall: tuple[Plan, dict[str, asyncio.Future[dict[str, tuple[Recollection, ...]]]]] | None = (
        None
    )
    unsynced: list[tuple[str, JournalPayload]] = field(default_factory=list)
    scanned: int = 0

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def root_id(self) -> str:
        return self.history.root_id

    def next_attempt(self, step_id: str) -> int:
        self.attempts[step_id] = self.attempts.get(step_id, 0) + 1
        return self.attempts[step_id]


class Coordinator:
    """Runs tasks to ``TaskCompleted`` or ``TaskFailed``, durably when given a journal.

    Args:
        bus: How to reach the planner, executors and reviewer.
        memory: Where plans and task summaries are remembered for next time.
        journal: The task journal; None runs without durability (no recovery, no approvals
            across restarts).
        namespace: Memory namespace.
        request_timeout_s: Longest wait for one agent's reply.
        max_delivery_attempts: Sends per request when the agent fails in a retryable way or
            no member answers (a crashed actor is restarting).
        high_impact_tools: Tools whose steps always wait for a human's approval.
        approvals: How long a step waits for a decision, and what a timeout does.
        retention: Which finished tasks to prune from the journal; None keeps them all.
        compact_every: Apply ``retention`` after this many finished tasks.
        poll_s: How often the journal is checked for decisions and cancels written by other
            processes (``troupe approve`` / ``troupe cancel``).
        group_commit_s: How long entries that recovery re-derives (a dispatch, an unreviewed
            result, a non-terminal state) may wait in memory for the task's next write, which
            takes them in the same transaction; 0 writes each at once.
        recall_episodes: Episodes of other tasks recalled for each model step and handed to
            the executor with it (``agents.recall_episodes``); 0 leaves recall to executors.
    """

    name = NAME

    def __init__(
        self,
        bus: Bus,
        memory: EpisodicMemory | None,
        *,
        journal: Journal | None = None,
        namespace: str = "default",
        request_timeout_s: float = 300.0,
        max_delivery_attempts: int = 4,
        high_impact_tools: Iterable[str] = (),
        approvals: ApprovalSettings | None = None,
        retention: RetentionPolicy | None = None,
        compact_every: int = 100,
        poll_s: float = 1.0,
        group_commit_s: float = 0.05,
        recall_episodes: int = 2,
    ):
        self._bus = bus
        self._memory = memory
        self._journal = journal
        self._namespace = namespace
        self._timeout = request_timeout_s
        self._attempts = max_delivery_attempts
        self._high_impact = frozenset(high_impact_tools)
        self._approvals = approvals or ApprovalSettings()
        self._retention = retention
        self._compact_every = compact_every
        self._poll_s = poll_s
        self._group_commit_s = group_commit_s
        self._recall_episodes = recall_episodes
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._remembering: set[asyncio.Task[None]] = set()
        self._runs: dict[str, _Run] = {}
        self._finished = 0
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._closing = False
        # Writes made durable "soon" (see `_write`): one fsync at a time in its own thread, at
        # most `group_commit_s` after the commit (a synced write covers them earlier).
        self._sync_pool: ThreadPoolExecutor | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        self._sync_wanted = False

    # -- the public surface ------------------------------------------------------------------

    async def run(self, task: TaskSubmitted) -> Outcome:
        """Runs one task to its end (or joins it when it is already known); never raises for
        a failure of the task itself.

        The submission is committed at once and fsync'd "soon" (see ``_write``): nobody is
        told of it before the outcome, whose synced write covers it.
        """
        task_id = self._accept(task, durable="soon")
        return await self.wait(task_id)

    async def submit(self, task: TaskSubmitted) -> str:
        """Accepts a task: it is journaled (fsync'd) before this returns, then runs in the
        background.

        Submitting a task id the journal already holds joins that task instead (a retried
        call after a coordinator restart is harmless).
        """
        return self._accept(task, durable="now")

    def _accept(self, task: TaskSubmitted, *, durable: Durability) -> str:
        if task.task_id in self._runs:
            return task.task_id
        if self._journal is not None and self._journal.last(task.task_id) is not None:
            self._resume(task.task_id)
            return task.task_id
        submitted = Envelope.wrap(task, sender="user", topic=Topics.TASK_EVENTS, provenance="user")
        history = History.new(submitted)
        run = _Run(task=task, history=history, live=True)
        if self._journal is not None:
            self._commit(run, [(task.type, submitted)], sync=durable == "now")
            run.scanned = max(run.written)  # the submission: the task's first entry
            if durable == "soon":
                self._sync_soon()
        self._start(run, submitted)
        return task.task_id

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Outcome:
        """The task's outcome, waiting for it (``TimeoutError`` after ``timeout_s``).

        Raises:
            TaskError: no such task (code ``unknown_task``).
        """
        run = self._runs.get(task_id)
        if run is None:
            run = self._resume(task_id)
        assert run.done is not None
        return await asyncio.wait_for(asyncio.shield(run.done), timeout_s)

    async def recover(self) -> list[str]:
        """Resumes every unfinished task in the journal that is not running here.

        Call it once when a coordinator starts (a restarted actor, ``troupe resume``); only
        one coordinator may own a journal at a time.
        """
        if self._journal is None:
            return []
        resumed = []
        for info in self._journal.tasks():
            if info.status not in TERMINAL and info.task_id not in self._runs:
                self._resume(info.task_id)
                resumed.append(info.task_id)
        return resumed

    async def decide(self, decision: ApprovalDecided) -> None:
        """Applies a human's decision to a waiting step (journaled first).

        Raises:
            TaskError: the task or step is not waiting for approval (code ``not_pending``).
        """
        run = self._runs.get(decision.task_id)
        if run is None and self._journal is not None:
            info = self.status(decision.task_id)
            if info is not None and info.status not in TERMINAL:
                run = self._resume(decision.task_id)
        is_open = run is not None and (
            decision.step_id in run.pending
            or (self._journal is not None and gate_open(self._journal, decision))
        )
        if run is None or not is_open:
            waiting = ", ".join(f"{r.task_id}/{s}" for r in self._runs.values() for s in r.pending)
            raise TaskError(
                f"task {decision.task_id} has no step {decision.step_id!r} waiting for approval; "
                f"waiting now: {waiting or 'none'}",
                code="not_pending",
            )
        self._accept_decision(run, decision, write=True)

    async def cancel(self, task_id: str, *, reason: str = "", requested_by: str = "user") -> bool:
        """Stops a running task: in-flight steps are abandoned and recorded, the task ends
        ``cancelled``. Returns False when the task had already finished.

        Raises:
            TaskError: no such task (code ``unknown_task``).
        """
        info = self.status(task_id)
        if info is not None and info.status in TERMINAL:
            return False
        run = self._runs.get(task_id) or self._resume(task_id)
        assert run.done is not None
        if run.done.done():
            return False
        request = CancelTask(task_id=task_id, reason=reason, requested_by=requested_by)
        self._write(run, [(request.type, self._envelope(run, request, Topics.CONTROL))])
        self._halt(run, request)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(run.done)
        return True

    def pending_approvals(self, task_id: str | None = None) -> list[ApprovalRequested]:
        """Steps waiting for a human's decision (of one task, or all)."""
        return [
            request
            for run in self._runs.values()
            if task_id in (None, run.task_id)
            for request in run.pending.values()
        ]

    def status(self, task_id: str) -> TaskInfo | None:
        """The task as the journal's index knows it (None: unknown, or no journal)."""
        if self._journal is None:
            return None
        return self._journal.task(task_id)

    async def replay(self, task_id: str) -> Outcome:
        """Re-runs a journaled task from its recorded replies, with no bus and no writes.

        The result equals the recorded outcome when the logic is unchanged; a reply the
        journal does not hold is a ``TaskError`` (code ``replay_diverged``).
        """
        entries = self._entries(task_id)
        history = History.from_entries(entries)
        history.outcome = None
        history.cancel = None
        replayer = Coordinator(
            _ReplayBus(task_id),
            None,
            namespace=self._namespace,
            high_impact_tools=self._high_impact,
            approvals=self._approvals,
        )
        run = _Run(task=history.task, history=history, live=False)
        run.status = history.state.status if history.state else "submitted"
        replayer._start(run, entries[0].payload)
        assert run.done is not None
        return await run.done

    async def fork(self, task_id: str, from_step: str, *, goal: str | None = None) -> str:
        """Starts a new task from step ``from_step`` (an id, or a 1-based position) of a
        finished task's final plan: earlier steps keep their recorded results, the rest run
        live with this coordinator's agents (a changed model or prompt).

        Raises:
            TaskError: unknown task or step (code ``bad_fork``).
        """
        journal = self._require_journal()
        entries = self._entries(task_id)
        history = History.from_entries(entries)
        plan = history.task.plan
        if history.plans:
            last = history.plans[-1].payload
            assert isinstance(last, PlanProposed)
            plan = last.plan
        if plan is None:
            raise TaskError(f"task {task_id} never got a plan; nothing to fork", code="bad_fork")
        cut = _fork_position(plan, from_step)
        keep = _kept_steps(plan, cut)
        task = history.task.model_copy(
            update={
                "task_id": f"{task_id[:48]}-fork-{uuid.uuid4().hex[:6]}",
                "goal": goal or history.task.goal,
                "plan": plan,
                "forked_from": f"{task_id}:{plan.steps[cut].id}",
                "submitted_at": datetime.now(UTC),
            }
        )
        submitted = Envelope.wrap(task, sender="user", topic=Topics.TASK_EVENTS, provenance="user")
        items: list[tuple[str, JournalPayload]] = [(task.type, submitted)]
        items += _seed_entries(history, task.task_id, keep)
        journal.append_many(task.task_id, items)
        self._resume(task.task_id)
        return task.task_id

    def stats(self) -> dict[str, int]:
        """Tasks running here, and how many have caught up with their journal."""
        runs = list(self._runs.values())
        return {
            "active": len(runs),
            "caught_up": sum(1 for r in runs if r.history.caught_up),
            "awaiting_approval": sum(1 for r in runs if r.pending),
            "finished": self._finished,
        }

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Writes the journal entries waiting for a group commit and waits (at most
        ``timeout_s``) for the memory writes of ended tasks, which follow their outcomes."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_unsynced()
        self._cancel_sync_timer()
        if self._syncing is not None and self._sync_running():
            await asyncio.wait([self._syncing], timeout=timeout_s)
            self._cancel_sync_timer()  # armed by that fsync for commits made meanwhile
        if self._sync_wanted and self._journal is not None:
            self._syncing = asyncio.ensure_future(self._sync_loop(drain=True))
            await asyncio.wait([self._syncing], timeout=timeout_s)
        if self._remembering:  # bounded: a memory that hangs must not hold up a shutdown
            await asyncio.wait(self._remembering, timeout=timeout_s)

    async def close(self, *, flush: bool = True) -> None:
        """Stops like a crash would after a ``flush``: nothing more is journaled, unfinished
        tasks stay resumable by the next coordinator. ``flush=False`` also drops what waits
        for a group commit, exactly as a crash would."""
        if flush:
            await self.flush()
        else:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self._cancel_sync_timer()
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        inner = [r.inner for r in self._runs.values() if r.inner is not None and not r.inner.done()]
        for future in inner:
            future.cancel()
        await asyncio.gather(*inner, return_exceptions=True)
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=False)

    # -- starting and resuming ---------------------------------------------------------------

    def _resume(self, task_id: str) -> _Run:
        entries = self._entries(task_id)
        history = History.from_entries(entries)
        run = _Run(task=history.task, history=history, live=True)
        run.status = history.state.status if history.state else "submitted"
        run.scanned = history.last_seq
        first = entries[0].payload
        assert isinstance(first, Envelope)
        self._start(run, first)
        if history.outcome is None and history.last_seq > 1:
            self._note(run, "journal", "task.recovered", f"resumed from seq {history.last_seq}")
        return run

    def _entries(self, task_id: str) -> list[Any]:
        entries = self._require_journal().entries(task_id)
        if not entries:
            raise TaskError(f"no task {task_id!r} in the journal", code="unknown_task")
        return entries

    def _require_journal(self) -> Journal:
        if self._journal is None:
            raise ConfigurationError(
                "this coordinator runs without a journal (journal.enabled is false); recovery, "
                "replay, fork and cross-restart approvals need it"
            )
        return self._journal

    def _start(self, run: _Run, submitted: Envelope) -> None:
        self._runs[run.task_id] = run
        self._trace(run, submitted)
        loop = asyncio.get_running_loop()
        run.done = loop.create_future()
        task = loop.create_task(self._drive(run))
        task.add_done_callback(lambda t: self._settle(run, t))
        if self._journal is not None and run.live and self._watcher is None:
            self._watcher = loop.create_task(self._watch())

    def _settle(self, run: _Run, task: asyncio.Task[Outcome]) -> None:
        assert run.done is not None
        if self._runs.get(run.task_id) is run:
            del self._runs[run.task_id]
        if run.done.done():
            return
        if task.cancelled():
            run.done.cancel()
        elif task.exception() is not None:
            run.done.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            run.done.set_result(task.result())

    # -- the task's life ---------------------------------------------------------------------

    async def _drive(self, run: _Run) -> Outcome:
        history = run.history
        if history.outcome is not None:
            return history.outcome
        if history.cancel is not None:
            run.stop = history.cancel
            if history.state is not None:
                for step_id, flight in history.state.in_flight.items():
                    self._abandon(run, step_id, flight.attempt)
        deadline = self._arm_deadline(run)
        run.inner = asyncio.ensure_future(self._plan_and_execute(run))
        if run.stop is not None:
            run.inner.cancel()
        try:
            final = await run.inner
        except asyncio.CancelledError:
            if run.stop is None:
                raise  # the coordinator is shutting down: the task stays resumable
            outcome: Outcome = self._stopped(run, run.stop)
        except TroupeError as exc:
            outcome = self._failed(run, exc)
        else:
            outcome = self._completed(run, final)
        finally:
            if deadline is not None:
                deadline.cancel()
        self._end(run, outcome)
        if run.live:
            # Behind the outcome; the next plan waits for it (``_remembered``).
            remembering = asyncio.get_running_loop().create_task(self._remember(run, outcome))
            self._remembering.add(remembering)
            remembering.add_done_callback(self._remembering.discard)
            await self._announce(run, outcome)
        return outcome

    def _arm_deadline(self, run: _Run) -> asyncio.TimerHandle | None:
        seconds = run.task.budget.deadline_s
        if seconds is None or not run.live:
            return None
        due = run.task.submitted_at + timedelta(seconds=seconds)
        delay = max(0.0, (due - datetime.now(UTC)).total_seconds())
        error = TaskError(
            f"the task's deadline passed ({seconds:g} s after submission, at "
            f"{due.isoformat(timespec='seconds')}); work done so far is kept",
            code="deadline_exceeded",
        )
        return asyncio.get_running_loop().call_later(delay, self._halt, run, error)

    def _halt(self, run: _Run, reason: CancelTask | TaskError) -> None:
        if run.stop is None:
            run.stop = reason
        if run.inner is not None and not run.inner.done():
            run.inner.cancel()

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
                if run.task.plan is not None:
                    raise TaskError(
                        f"{rejected.feedback} (workflow {run.task.workflow or 'declared plan'} "
                        "has no planner to replan it)",
                        code="workflow_rejected",
                    ) from None
                feedback = rejected.feedback
        raise TaskError(
            f"the work was rejected {budget.max_replans + 1} time(s) and the replan "
            f"budget (max_replans={budget.max_replans}) is spent; last feedback: {feedback}",
            code="replan_budget_spent",
        )

    async def _plan(self, run: _Run, feedback: str | None) -> Plan:
        run.plan_round += 1
        run.planning = True
        self._sync_state(run)
        try:
            if run.task.plan is not None:
                return run.task.plan
            self._check_budget(run)
            request = PlanRequested(
                task_id=run.task_id,
                goal=run.task.goal,
                feedback=feedback,
                max_steps=run.task.budget.max_steps,
            )
            recorded = run.history.take_plan(run.plan_round)
            if recorded is None:
                await self._remembered()  # the planner recalls the tasks that just ended
            proposed = await self._ask(
                run, request, Topics.PLANNER, PlanProposed, recorded, reply="soon"
            )
            return proposed.plan
        finally:
            run.planning = False
            self._sync_state(run)

    async def _execute(self, run: _Run, plan: Plan) -> None:
        """Runs the plan's steps, each as soon as its dependencies are committed."""
        running: dict[asyncio.Future[StepRecord], str] = {}
        started: set[str] = set()
        try:
            while len(run.records) < len(plan.steps):
                for step in plan.ready(run.records):
                    if step.id not in started:
                        started.add(step.id)
                        running[asyncio.ensure_future(self._run_step(run, step))] = step.id
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    record = future.result()  # a failure or reject stops the rest
                    run.records[record.step.id] = record
        finally:
            for future in running:
                future.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _finish(self, run: _Run, plan: Plan) -> StepRecord:
        """The final answer: one more model step over every step's result, reviewed too.

        A declared workflow's answer is what its last steps produced (its author said what
        the result is); no model rewrites it.
        """
        if run.task.workflow is not None:
            last = [run.records[s.id] for s in plan.sinks()]
            output = "\n\n".join(r.output for r in last)
            step = Step(
                id=FINAL_STEP,
                description=f"The result of workflow {run.task.workflow or 'declared plan'}",
                tool="workflow",
                depends_on=tuple(r.step.id for r in last),
            )
            return StepRecord(
                step=step,
                output=output,
                decision="approve",
                feedback="the workflow's last step(s)",
                approved=all(r.approved for r in last),
            )
        sinks = [s.id for s in plan.sinks()]
        return await self._run_step(
            run, _final_step(run, plan), final_answer=True, evidence_from=sinks
        )

    async def _run_step(
        self,
        run: _Run,
        step: Step,
        *,
        final_answer: bool = False,
        evidence_from: list[str] | None = None,
    ) -> StepRecord:
        """Gate, execute, review, and revise within the budget; raises ``_Rejected``."""
        budget = run.task.budget
        step = _render_input(step, run.records)  # the approver sees what will run
        if step.requires_approval or step.tool in self._high_impact:
            step = await self._gate(run, step)
        inputs = {d: run.records[d].output for d in step.depends_on}
        sources = step.depends_on if evidence_from is None else evidence_from
        evidence = tuple(
            call for d in sources if (call := _last_tool_result(run.results[d])) is not None
        )
        revisions = budget.max_revisions if step.max_revisions is None else step.max_revisions
        feedback: str | None = None
        for turn in range(revisions + 1):
            self._check_budget(run)
            attempt = run.next_attempt(step.id)
            key = idempotency_key(run.task_id, step.id, attempt)
            recorded = run.history.take_result(step.id, attempt)
            assigned = StepAssigned(
                task_id=run.task_id,
                goal=run.task.goal,
                step=step,
                inputs=inputs,
                feedback=feedback,
                attempt=attempt,
                idempotency_key=key,
                recalled=None if recorded is not None else await self._recalled(run, step),
            )
            started = StepStarted(step_id=step.id, attempt=attempt, idempotency_key=key)
            try:
                # The review's write syncs the result: a result lost to a power cut before
                # then is a step still in flight, re-sent with the same key.
                result = await self._ask(
                    run,
                    assigned,
                    Topics.EXECUTOR,
                    StepResult,
                    recorded,
                    before=[started],
                    reply="defer",
                )
                self._count_tool_calls(run, result)
                verdict = await self._review(
                    run,
                    step,
                    result,
                    inputs,
                    evidence,
                    final_answer=final_answer,
                    last=turn == revisions,
                )
            except asyncio.CancelledError:
                if run.live and run.history.caught_up:
                    self._abandon(run, step.id, attempt)
                raise
            if verdict.decision == "approve":
                run.results[step.id] = result
                return _record(step, result, verdict, approved=True)
            if verdict.decision == "reject" and run.task.plan is None:
                raise _Rejected(f"step {step.id} ({step.description}): {verdict.feedback}")
            # A declared workflow has no planner to go back to: a reject means do it again.
            feedback = verdict.feedback or "the reviewer asked for a better result"
        return self._revisions_spent(run, step, result, verdict, revisions)

    async def _recalled(self, run: _Run, step: Step) -> tuple[Recollection, ...] | None:
        """What memory holds for ``step`` from other tasks, for the executor's prompt.

        Two ``recall_many`` calls per plan, sent together, cover every model step (and the
        final answer), instead of one memory round trip per step from the executor: one for
        the steps that can start at once, which wait for it, and one for the rest, which
        arrives while the first steps run. None (the executor recalls itself): a tool step, no
        memory, or the recall failed.
        """
        if self._memory is None or self._recall_episodes == 0 or step.tool != MODEL_TOOL:
            return None
        plan = run.plan
        if plan is None:
            return None
        if run.recall is None or run.recall[0] is not plan:
            steps = (
                [*plan.steps]
                if run.task.workflow is not None
                else [*plan.steps, _final_step(run, plan)]
            )
            wanted = [s for s in steps if s.tool == MODEL_TOOL]
            first = {s.id for s in plan.ready(())}
            futures: dict[str, asyncio.Future[dict[str, tuple[Recollection, ...]]]] = {}
            for group in (
                [s for s in wanted if s.id in first],
                [s for s in wanted if s.id not in first],
            ):
                if group:  # the first is sent first, and the memory answers in order
                    sent = asyncio.ensure_future(self._recall_all(run, group))
                    futures.update((s.id, sent) for s in group)
            run.recall = (plan, futures)
        batch = run.recall[1].get(step.id)
        if batch is None:
            return None
        found = await asyncio.shield(batch)  # shared by the steps of its group
        return found.get(step.id)

    async def _recall_all(
        self, run: _Run, steps: list[Step]
    ) -> dict[str, tuple[Recollection, ...]]:
        assert self._memory is not None
        queries = [recall_query(s, self._namespace, self._recall_episodes) for s in steps]
        try:
            found = await self._memory.recall_many(queries)
        except Exception as exc:  # recall is context, not correctness: executors ask themselves
            logger.warning("task %s: recall for its steps failed: %s", run.task_id, exc)
            return {}
        return {
            s.id: tuple(relevant(recollections(f), run.task_id, self._recall_episodes))
            for s, f in zip(steps, found, strict=True)
        }

    async def _review(
        self,
        run: _Run,
        step: Step,
        result: StepResult,
        inputs: dict[str, str],
        evidence: tuple[ToolCall, ...],
        *,
        final_answer: bool,
        last: bool,
    ) -> ReviewVerdict:
        review = ReviewRequested(
            task_id=run.task_id,
            goal=run.task.goal,
            step=step,
            result=result,
            inputs=inputs,
            evidence=evidence,
            final=final_answer,
        )
        accept = last and result.ok and run.task.budget.on_revisions_exhausted == "accept"

        def commit(verdict: ReviewVerdict) -> list[tuple[str, JournalPayload]]:
            if verdict.decision == "approve" or (verdict.decision == "revise" and accept):
                done = StepCommitted(
                    step_id=step.id,
                    attempt=result.attempt,
                    output=result.output,
                    approved=verdict.decision == "approve",
                )
                return [(done.type, done)]
            return []

        recorded = run.history.take_verdict(step.id, result.attempt)
        run.reviewing += final_answer
        self._sync_state(run)
        try:
            return await self._ask(
                run, review, Topics.REVIEWER, ReviewVerdict, recorded, after=commit, reply="soon"
            )
        finally:
            run.reviewing -= final_answer

    def _revisions_spent(
        self, run: _Run, step: Step, result: StepResult, verdict: ReviewVerdict, revisions: int
    ) -> StepRecord:
        budget = run.task.budget
        if not result.ok or budget.on_revisions_exhausted == "fail":
            raise TaskError(
                f"step {step.id} was revised {revisions} time(s) without approval "
                f"(max_revisions={revisions}); last feedback: {verdict.feedback}",
                code="revision_budget_spent",
            )
        run.results[step.id] = result
        return _record(step, result, verdict, approved=False)

    # -- approvals ---------------------------------------------------------------------------

    async def _gate(self, run: _Run, step: Step) -> Step:
        """Waits for a human's decision on ``step``; returns the step to run (edited or not).

        Raises:
            _Rejected: the human (or the timeout policy) rejected it.
        """
        number = run.gates.get(step.id, 0) + 1
        run.gates[step.id] = number
        recorded = run.history.gate(step.id, number)
        if recorded is not None:
            run.history.consume_gate(recorded)
        decision = recorded.decision if recorded is not None else None
        if decision is None:
            decision = await self._await_decision(run, step, recorded)
        else:
            self._trace_message(run, decision, Topics.APPROVALS)
        if decision.decision == "reject":
            who = decision.decided_by
            raise _Rejected(
                f"step {step.id} ({step.description}) was rejected by {who}: "
                f"{decision.reason or 'no reason given'}"
            )
        if decision.decision == "edit" and decision.edited_input is not None:
            return step.model_copy(update={"input": decision.edited_input})
        return step

    async def _await_decision(
        self, run: _Run, step: Step, recorded: Gate | None
    ) -> ApprovalDecided:
        if not run.live:
            raise TaskError(
                f"replay diverged: no recorded decision for the approval of step {step.id}",
                code="replay_diverged",
            )
        requests = list(recorded.requests) if recorded is not None else []
        if not requests:
            requests.append(self._open_gate(run, step, escalation=0, why=_why(step, self)))
        else:
            for request in requests:
                self._trace_message(run, request, Topics.APPROVALS)
        run.pending[step.id] = requests[-1]
        future: asyncio.Future[ApprovalDecided] = asyncio.get_running_loop().create_future()
        run.waiters[step.id] = future
        early = run.early.pop(step.id, None)
        if early is not None:
            future.set_result(early)
        self._sync_state(run)
        try:
            while True:
                request = run.pending[step.id]
                timeout = _seconds_until(request.deadline)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    escalate = self._approvals.on_timeout == "escalate"
                    if escalate and request.escalation == 0:
                        run.pending[step.id] = self._open_gate(
                            run, step, escalation=1, why=f"escalated: {request.reason}"
                        )
                        continue
                    self._accept_decision(
                        run,
                        ApprovalDecided(
                            task_id=run.task_id,
                            step_id=step.id,
                            decision="reject",
                            decided_by="deadline",
                            reason=f"no decision by {request.deadline}",
                        ),
                        write=True,
                    )
        finally:
            run.pending.pop(step.id, None)
            run.waiters.pop(step.id, None)
            self._sync_state(run)

    def _open_gate(self, run: _Run, step: Step, *, escalation: int, why: str) -> ApprovalRequested:
        timeout = self._approvals.timeout_s
        request = ApprovalRequested(
            task_id=run.task_id,
            step=step,
            reason=clip(why, 2000),
            deadline=None if timeout is None else datetime.now(UTC) + timedelta(seconds=timeout),
            escalation=escalation,
        )
        topic = Topics.ESCALATIONS if escalation else Topics.APPROVALS
        envelope = self._envelope(run, request, topic)
        self._write(run, [(request.type, envelope)])
        publish = asyncio.ensure_future(self._publish_quietly(envelope))
        self._background.add(publish)
        publish.add_done_callback(self._background.discard)
        return request

    def _accept_decision(self, run: _Run, decision: ApprovalDecided, *, write: bool) -> None:
        """Journals a decision (unless another process did) and hands it to the waiting gate,
        or keeps it for the gate a resuming task has not reached yet."""
        future = run.waiters.get(decision.step_id)
        if future is not None and future.done():
            return  # this gate is already decided; a racing decision changes nothing
        if write:
            envelope = self._envelope(run, decision, Topics.APPROVALS, sender=decision.decided_by)
            self._write(run, [(decision.type, envelope)])
        if future is None:
            run.early[decision.step_id] = decision
        else:
            future.set_result(decision)

    # -- messaging ---------------------------------------------------------------------------

    async def _ask(
        self,
        run: _Run,
        payload: AnyMessage,
        topic: str,
        expected: type[_M],
        recorded: Envelope | None,
        *,
        before: Sequence[StepStarted] = (),
        after: Callable[[Any], list[tuple[str, JournalPayload]]] | None = None,
        reply: Durability = "now",
    ) -> _M:
        """A request through the bus, or its recorded reply; journaled and traced both ways.

        ``before`` is journaled (deferred, see ``_write``) right before each send; the reply is
        journaled (with what ``after`` derives from it, in the same transaction) before it is
        acted on, as durable as ``reply`` says (see ``_write``).
        """
        if recorded is not None:
            self._trace(
                run, Envelope.wrap(payload, sender=self.name, topic=topic, causation_id=run.root_id)
            )
            return self._accept_reply(run, recorded, topic, expected)
        if not run.live:
            raise TaskError(
                f"replay diverged: the journal holds no reply to {payload.type} "
                f"({_summary(payload)[:120]})",
                code="replay_diverged",
            )
        for attempt in range(1, self._attempts + 1):
            envelope = Envelope.wrap(
                payload, sender=self.name, topic=topic, causation_id=run.root_id, attempt=attempt
            )
            self._write(run, [(d.type, d) for d in before], durable="defer")
            self._trace(run, envelope)
            try:
                answer = await self._bus.request(envelope, timeout=self._timeout)
            except (RemoteAgentError, DeliveryError) as exc:
                report = (
                    exc.report
                    if isinstance(exc, RemoteAgentError)
                    else ErrorReport.from_exception(exc, sender=topic, task_id=run.task_id)
                )
                self._trace_error(run, topic, report)
                self._write(run, [(report.type, self._envelope(run, report, topic, report.sender))])
                if not exc.retryable or attempt == self._attempts:
                    raise
                await asyncio.sleep(min(4.0, 0.5 * 2 ** (attempt - 1)))
                continue
            if not isinstance(answer.payload, expected):
                raise DeliveryError(
                    f"{topic} answered {answer.payload.type!r} where {expected.__name__} was due",
                    code="unexpected_reply",
                    retryable=False,
                )
            extra = after(answer.payload) if after is not None else []
            self._write(run, [(answer.payload.type, answer), *extra], durable=reply)
            return self._accept_reply(run, answer, topic, expected)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _accept_reply(self, run: _Run, reply: Envelope, topic: str, expected: type[_M]) -> _M:
        payload = reply.payload
        if not isinstance(payload, expected):
            raise TaskError(
                f"the journal holds {payload.type!r} where {expected.__name__} was due on "
                f"{topic}; the journal and this coordinator's logic disagree",
                code="journal_mismatch",
            )
        self._trace(run, reply)
        usage = getattr(payload, "usage", None)
        if isinstance(usage, Usage):
            run.usage = run.usage + usage
            self._check_budget(run, after_reply=True)
        return payload

    def _check_budget(self, run: _Run, *, after_reply: bool = False) -> None:
        """Ends the task when a model-call or token budget is reached (before more work) or
        exceeded (after a reply)."""
        budget, used = run.task.budget, run.usage

        def over(value: int, limit: int | None) -> bool:
            return limit is not None and (value > limit if after_reply else value >= limit)

        if over(used.model_calls, budget.max_model_calls):
            raise TaskError(
                f"the model-call budget is spent: {used.model_calls} call(s) made, "
                f"max_model_calls={budget.max_model_calls}",
                code="budget_model_calls",
            )
        if over(used.tokens, budget.max_tokens):
            raise TaskError(
                f"the token budget is spent: {used.tokens} token(s) used, "
                f"max_tokens={budget.max_tokens}",
                code="budget_tokens",
            )

    def _count_tool_calls(self, run: _Run, result: StepResult) -> None:
        limit = run.task.budget.max_identical_tool_calls
        for call in result.tool_calls:
            key = (call.tool, call.arguments)
            run.tool_calls[key] += 1
            if run.tool_calls[key] >= limit:
                raise TaskError(
                    f"loop detected: {call.tool}({clip(call.arguments, 200)}) was called "
                    f"{run.tool_calls[key]} times in this task "
                    f"(max_identical_tool_calls={limit})",
                    code="loop_detected",
                )

    # -- journal and state -------------------------------------------------------------------

    def _write(
        self,
        run: _Run,
        items: list[tuple[str, JournalPayload]],
        *,
        durable: Durability = "now",
    ) -> None:
        """Journals entries, after those of the task waiting in memory, in one transaction.

        ``durable`` says when they reach the disk:

        - ``"now"``: fsync'd before this returns. For what must be on disk before anyone is
          told (a task accepted by ``submit``, an approval request or decision, an outcome).
        - ``"soon"`` (a plan, a verdict with its commit: the hot path): committed without an
          fsync; one fsync in a worker thread covers every such commit within
          ``group_commit_s`` (or the next synced write does, whichever comes first). A process
          crash loses nothing; a power cut within that window loses the entries (the step then
          runs again with the same idempotency key). The event loop does not wait for the disk
          and sends the next step meanwhile; and a step's writes do not queue behind an fsync
          of the log they append to, as they did with one fsync per commit.
        - ``"later"``: for what recovery re-derives anyway (a dispatch, an unreviewed result, a
          non-terminal state): no fsync of its own, synced by the next synced write.
        - ``"defer"``: like ``"later"``, and they wait in memory for the task's next write
          (group commit), at most ``group_commit_s``: for the hot path, whose next write comes
          within milliseconds. Lost in a crash, they cost a re-sent step (same idempotency
          key), never committed work.
        """
        if self._journal is None or not run.live or not items or self._closing:
            return
        if durable == "defer" and self._group_commit_s > 0:
            for _, payload in items:
                if isinstance(payload, StateChanged):
                    run.status = payload.to
            run.unsynced.extend(items)
            loop = asyncio.get_running_loop()
            if self._flush_timer is None or self._flush_loop is not loop:
                self._flush_loop = loop  # a timer of a closed loop never fires
                self._flush_timer = loop.call_later(self._group_commit_s, self._flush_unsynced)
            return
        self._commit(run, items, sync=durable == "now")
        if durable == "soon":
            self._sync_soon()

    def _commit(self, run: _Run, items: list[tuple[str, JournalPayload]], *, sync: bool) -> None:
        assert self._journal is not None
        waiting, run.unsynced = run.unsynced, []
        try:
            entries = self._journal.append_many(run.task_id, [*waiting, *items], sync=sync)
        except BaseException:
            run.unsynced = [*waiting, *run.unsynced]
            raise
        for entry in entries:
            run.written.add(entry.seq)
            if isinstance(entry.payload, StateChanged):
                run.status = entry.payload.to
        if sync:  # a synced write makes every commit before it durable too
            self._sync_wanted = False
            self._cancel_sync_timer()

    def _sync_soon(self) -> None:
        """Makes the journal's commits so far durable within ``group_commit_s``, in a worker
        thread (see ``_write``)."""
        self._sync_wanted = True
        if self._sync_running():
            return  # the running fsync arms the next window when it ends
        if self._group_commit_s <= 0:
            self._start_sync()
            return
        if self._sync_timer is None:
            loop = asyncio.get_running_loop()
            self._sync_timer = loop.call_later(self._group_commit_s, self._start_sync)

    def _cancel_sync_timer(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None

    def _start_sync(self) -> None:
        self._sync_timer = None
        if self._sync_wanted and not self._sync_running():
            self._syncing = asyncio.ensure_future(self._sync_loop())

    def _sync_running(self) -> bool:
        """An fsync loop runs on this event loop (one of a loop since closed never finishes)."""
        syncing = self._syncing
        return (
            syncing is not None
            and not syncing.done()
            and syncing.get_loop() is asyncio.get_running_loop()
        )

    async def _sync_loop(self, *, drain: bool = False) -> None:
        # One fsync covers every commit made before it began. Commits made while it ran get
        # the next one: at once when draining (a flush), else a window later.
        assert self._journal is not None
        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="journal-sync")
        loop = asyncio.get_running_loop()
        while self._sync_wanted:
            self._sync_wanted = False
            try:
                await loop.run_in_executor(self._sync_pool, self._journal.sync)
            except OSError as exc:  # the next synced write fsyncs again, and raises if it fails
                logger.error("journal fsync failed: %s", exc)
            if not drain:
                break
        if self._sync_wanted and not self._closing and self._sync_timer is None:
            self._sync_timer = loop.call_later(self._group_commit_s, self._start_sync)

    def _flush_unsynced(self) -> None:
        """Writes every task's waiting entries (unsynced): the group-commit window closed."""
        self._flush_timer = None
        for run in list(self._runs.values()):
            if not run.unsynced:
                continue
            try:
                self._commit(run, [], sync=False)
            except Exception as exc:  # kept in memory: the task's next write tries again
                logger.warning("journal write of %s failed: %s", run.task_id, exc)

    def _desired(self, run: _Run) -> TaskStatus:
        if run.planning:
            return "planning"
        if run.pending:
            return "awaiting_approval"
        if run.reviewing:
            return "reviewing"
        return "running"

    def _sync_state(self, run: _Run) -> None:
        """Journals a state change once the re-execution has caught up with the journal."""
        if not run.history.caught_up or run.status in TERMINAL:
            return
        target = self._desired(run)
        if target != run.status:
            self._change(run, target)

    def _change(self, run: _Run, target: TaskStatus, reason: str = "") -> None:
        items = self._transition(run, target, reason)
        if self._journal is None or not run.live:
            run.status = target
            return
        # Re-derived by recovery; the next reply syncs it. A human waits on awaiting_approval:
        # that one is written at once, so `troupe status` and `troupe approvals` agree.
        hot = target in ("planning", "running", "reviewing")
        self._write(run, items, durable="defer" if hot else "later")

    def _transition(
        self, run: _Run, target: TaskStatus, reason: str = ""
    ) -> list[tuple[str, JournalPayload]]:
        """The state.changed entries from the journaled state to ``target``."""
        path: list[TaskStatus] = [target]
        if run.status == "submitted" and target not in ("planning", "failed", "cancelled"):
            path = ["planning", target]
        if target == "completed" and run.status not in ("running", "reviewing"):
            path = ["running", target]
        items: list[tuple[str, JournalPayload]] = []
        for to in path:
            change = StateChanged(to=to, reason=clip(reason, 2000) if to == target else "")
            items.append((change.type, change))
        return items

    def _abandon(self, run: _Run, step_id: str, attempt: int) -> None:
        if self._closing:
            return  # a shutdown is a crash as far as the task goes: it resumes in flight
        stop = run.stop
        reason = (
            f"cancelled by {stop.requested_by}: {stop.reason}"
            if isinstance(stop, CancelTask)
            else stop.message
            if stop is not None
            else "another step failed or was rejected"
        )
        abandoned = StepAbandoned(step_id=step_id, attempt=attempt, reason=clip(reason, 2000))
        with contextlib.suppress(TroupeError):
            self._write(run, [(abandoned.type, abandoned)])

    def _end(self, run: _Run, outcome: Outcome) -> None:
        if isinstance(outcome, TaskCompleted):
            target: TaskStatus = "completed"
        else:
            target = "cancelled" if outcome.cancelled else "failed"
        envelope = self._envelope(run, outcome, Topics.TASK_EVENTS)
        if self._journal is not None and run.live:
            reason = outcome.reason if isinstance(outcome, TaskFailed) else ""
            self._write(run, [(outcome.type, envelope), *self._transition(run, target, reason)])
        run.status = target
        self._finished += 1
        if self._retention is not None and self._finished % self._compact_every == 0:
            with contextlib.suppress(TroupeError):
                self._require_journal().compact(self._retention)

    async def _watch(self) -> None:
        """Picks up decisions and cancels that other processes wrote into the journal."""
        assert self._journal is not None
        while True:
            await asyncio.sleep(self._poll_s)
            for run in list(self._runs.values()):
                if not run.live or run.done is None or run.done.done():
                    continue
                try:
                    self._scan(run)
                except Exception as exc:  # a busy or damaged file: try again next time
                    logger.warning("journal watch of %s failed: %s", run.task_id, exc)

    def _scan(self, run: _Run) -> None:
        assert self._journal is not None
        last = self._journal.last(run.task_id)
        if last is None or last.seq <= run.scanned:
            return
        for entry in self._journal.entries(run.task_id, after_seq=run.scanned):
            run.scanned = entry.seq
            if entry.seq in run.written or not isinstance(entry.payload, Envelope):
                continue
            message = entry.payload.payload
            if isinstance(message, ApprovalDecided):
                self._accept_decision(run, message, write=False)
            elif isinstance(message, CancelTask):
                self._halt(run, message)

    # -- tracing -----------------------------------------------------------------------------

    def _envelope(
        self, run: _Run, payload: AnyMessage, topic: str, sender: str | None = None
    ) -> Envelope:
        return Envelope.wrap(
            payload, sender=clip(sender or self.name, 64), topic=topic, causation_id=run.root_id
        )

    def _trace_message(self, run: _Run, payload: AnyMessage, topic: str) -> None:
        self._trace(run, self._envelope(run, payload, topic))

    def _trace(self, run: _Run, envelope: Envelope) -> None:
        payload = envelope.payload
        usage = getattr(payload, "usage", None)
        run.trace.append(
            TraceEvent(
                seq=len(run.trace),
                at=envelope.created_at,
                sender=envelope.sender,
                topic=envelope.topic,
                message_type=payload.type,
                step_id=_step_of(payload),
                summary=clip(_summary(payload), 1000),
                usage=usage if isinstance(usage, Usage) and usage.model_calls else None,
            )
        )

    def _trace_error(self, run: _Run, topic: str, report: ErrorReport) -> None:
        self._note(run, topic, report.type, f"{report.code}: {report.message}", report.sender)

    def _note(self, run: _Run, topic: str, kind: str, summary: str, sender: str = NAME) -> None:
        run.trace.append(
            TraceEvent(
                seq=len(run.trace),
                at=datetime.now(UTC),
                sender=clip(sender, 64),
                topic=topic,
                message_type=kind,
                summary=clip(summary, 1000),
            )
        )

    # -- outcomes ----------------------------------------------------------------------------

    def _completed(self, run: _Run, final: StepRecord) -> TaskCompleted:
        return TaskCompleted(
            task_id=run.task_id,
            goal=run.task.goal,
            final_answer=final.output,
            steps=(*_in_plan_order(run), final),
            trace=tuple(run.trace),
            usage=run.usage,
        )

    def _failed(self, run: _Run, exc: TroupeError) -> TaskFailed:
        return TaskFailed(
            task_id=run.task_id,
            goal=run.task.goal,
            reason=exc.message,
            error=ErrorReport.from_exception(exc, sender=self.name, task_id=run.task_id),
            steps=_in_plan_order(run),
            trace=tuple(run.trace),
            usage=run.usage,
        )

    def _stopped(self, run: _Run, stop: CancelTask | TaskError) -> TaskFailed:
        if isinstance(stop, TaskError):
            return self._failed(run, stop)
        reason = f"cancelled by {stop.requested_by}" + (f": {stop.reason}" if stop.reason else "")
        failed = self._failed(run, TaskError(reason, code="cancelled"))
        return failed.model_copy(update={"cancelled": True})

    async def _announce(self, run: _Run, outcome: Outcome) -> None:
        """Tells watchers of ``tasks.events``; a broken watcher does not change the outcome."""
        await self._publish_quietly(self._envelope(run, outcome, Topics.TASK_EVENTS))

    async def _publish_quietly(self, envelope: Envelope) -> None:
        # Watchers are told best-effort; the journal is the record.
        with contextlib.suppress(TroupeError):
            await self._bus.publish(envelope)

    async def _remembered(self) -> None:
        """Waits for the memory writes of tasks that have ended (they never raise)."""
        while self._remembering:
            await asyncio.gather(*self._remembering)

    async def _remember(self, run: _Run, outcome: Outcome) -> None:
        """The plan (reusable next time if it worked) and a summary of the task."""
        if self._memory is None:
            return
        completed = isinstance(outcome, TaskCompleted)
        common = {"agent": self.name, "namespace": self._namespace, "task_id": run.task_id}
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
        if run.plan is not None and run.task.plan is None:
            episodes.append(
                Episode.create(
                    kind="plan",
                    content=clip(f"plan for: {run.task.goal}", 4000),
                    importance=0.7 if completed else 0.3,
                    tags=(goal_tag(run.task.goal),),  # what the planner looks plans up by
                    trusted=True,
                    metadata={
                        "goal_key": goal_key(run.task.goal),
                        "outcome": "completed" if completed else "failed",
                        "plan": run.plan.model_dump_json(),
                    },
                    **common,  # type: ignore[arg-type]
                )
            )
        try:
            await self._memory.remember(episodes)
        except Exception as exc:  # memory is advice for next time; the outcome stands
            logger.warning("task %s: could not remember its episodes: %s", run.task_id, exc)


class _ReplayBus:
    """The bus of a replay: any use of it means the replay needed something not recorded."""

    def __init__(self, task_id: str):
        self._task_id = task_id

    async def request(self, envelope: Envelope, *, timeout: float = 0) -> Envelope:
        raise TaskError(
            f"replay of {self._task_id} tried to send {envelope.payload.type}",
            code="replay_diverged",
        )

    async def publish(self, envelope: Envelope) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise TaskError(f"replay does not use the bus ({name})", code="replay_diverged")


def _why(step: Step, coordinator: Coordinator) -> str:
    if step.tool in coordinator._high_impact:
        return f"tool {step.tool} is high-impact: a human must approve before it runs"
    return "the plan marks this step as needing a human's approval"


def _seconds_until(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, (deadline - datetime.now(UTC)).total_seconds())


def _final_step(run: _Run, plan: Plan) -> Step:
    """The final-answer step of a planned task."""
    return Step(
        id=FINAL_STEP,
        description=f"Write the final answer to the goal: {clip(run.task.goal, 400)}",
        tool=MODEL_TOOL,
        depends_on=tuple(s.id for s in plan.steps),
    )


def _render_input(step: Step, records: dict[str, StepRecord]) -> Step:
    """Replaces ``{{steps.<id>}}`` in the step's input with that step's committed output."""
    if "{{" not in step.input:
        return step

    def replace(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref not in step.depends_on or ref not in records:
            raise TaskError(
                f"step {step.id} input references steps.{ref}, which it does not depend on; "
                f"add {ref!r} to its depends_on",
                code="bad_reference",
            )
        return records[ref].output

    rendered = _REFERENCE.sub(replace, step.input)
    return step.model_copy(update={"input": clip(rendered, 2000)})


def _fork_position(plan: Plan, from_step: str) -> int:
    ids = [s.id for s in plan.steps]
    if from_step in ids:
        return ids.index(from_step)
    if from_step.isdigit() and 1 <= int(from_step) <= len(ids):
        return int(from_step) - 1
    raise TaskError(
        f"no step {from_step!r} in the plan; give a step id ({', '.join(ids)}) or a position "
        f"1..{len(ids)}",
        code="bad_fork",
    )


def _kept_steps(plan: Plan, cut: int) -> list[str]:
    """Steps before ``cut`` that do not depend, even indirectly, on a step from ``cut`` on."""
    redo = {s.id for s in plan.steps[cut:]}
    changed = True
    while changed:
        changed = False
        for step in plan.steps:
            if step.id not in redo and any(d in redo for d in step.depends_on):
                redo.add(step.id)
                changed = True
    return [s.id for s in plan.steps[:cut] if s.id not in redo]


def _seed_entries(
    history: History, task_id: str, keep: list[str]
) -> list[tuple[str, JournalPayload]]:
    """Journal entries that give a fork the kept steps' committed results as attempt 1."""
    items: list[tuple[str, JournalPayload]] = []
    state = history.state
    for step_id in keep:
        done = state.committed.get(step_id) if state is not None else None
        if done is None:
            continue
        result_env = history.results.get((step_id, done.attempt))
        verdict_env = history.verdicts.get((step_id, done.attempt))
        if result_env is None or verdict_env is None:
            continue
        for gate in history.gates.get(step_id, [])[-1:]:
            for request in gate.requests:
                copy = request.model_copy(update={"task_id": task_id})
                items.append((copy.type, _rewrap(copy, result_env)))
            if gate.decision is not None:
                decided = gate.decision.model_copy(update={"task_id": task_id})
                items.append((decided.type, _rewrap(decided, result_env)))
        key = idempotency_key(task_id, step_id, 1)
        started = StepStarted(step_id=step_id, attempt=1, idempotency_key=key)
        result = result_env.payload.model_copy(update={"task_id": task_id, "attempt": 1})
        verdict = verdict_env.payload.model_copy(update={"task_id": task_id})
        committed = StepCommitted(
            step_id=step_id, attempt=1, output=done.output, approved=done.approved
        )
        items += [
            (started.type, started),
            (result.type, _rewrap(result, result_env)),
            (verdict.type, _rewrap(verdict, verdict_env)),
            (committed.type, committed),
        ]
    return items


def _rewrap(payload: AnyMessage, like: Envelope) -> Envelope:
    return Envelope.wrap(payload, sender=like.sender, topic=like.topic, provenance=like.provenance)


def _in_plan_order(run: _Run) -> tuple[StepRecord, ...]:
    """Committed steps in the plan's order (they finish in any order when run in parallel)."""
    order = [s.id for s in run.plan.steps] if run.plan is not None else []
    known = [run.records[i] for i in order if i in run.records]
    return (*known, *(r for i, r in run.records.items() if i not in order))


def _record(
    step: Step, result: StepResult, verdict: ReviewVerdict, *, approved: bool
) -> StepRecord:
    return StepRecord(
        step=step,
        output=result.output,
        decision=verdict.decision,
        feedback=verdict.feedback,
        revisions=max(0, result.attempt - 1),
        approved=approved,
    )


def _last_tool_result(result: StepResult) -> ToolCall | None:
    """The successful tool call a step's accepted output rests on, if any."""
    return next((c for c in reversed(result.tool_calls) if c.ok), None)


def _step_of(payload: AnyMessage) -> str | None:
    if isinstance(payload, StepAssigned | ReviewRequested | ApprovalRequested):
        return payload.step.id
    if isinstance(payload, StepResult | ReviewVerdict | ApprovalDecided):
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
        case ApprovalRequested():
            return f"approval needed for {payload.step.id}: {payload.reason}"
        case ApprovalDecided():
            edited = f" (input: {payload.edited_input})" if payload.edited_input else ""
            return f"{payload.decision} by {payload.decided_by}{edited}: {payload.reason}"
        case CancelTask():
            return f"cancel by {payload.requested_by}: {payload.reason}"
        case Heartbeat():
            return payload.type
    assert_never(payload)


def _task_summary(outcome: Outcome) -> str:
    if isinstance(outcome, TaskCompleted):
        return f"Task: {outcome.goal}\nAnswer: {outcome.final_answer}"
    return f"Task: {outcome.goal}\nFailed: {outcome.reason}"


def gate_open(journal: Journal, decision: ApprovalDecided) -> bool:
    """Whether the journal shows the decision's step waiting for one (its last gate open)."""
    entries = journal.entries(decision.task_id)
    if not entries:
        return False
    history = History.from_entries(entries)
    if history.outcome is not None:
        return False
    gates = history.gates.get(decision.step_id, [])
    return bool(gates) and gates[-1].decision is None


def record_decision(journal: Journal, decision: ApprovalDecided) -> None:
    """Writes a decision straight into the journal (``troupe approve`` without a reachable
    coordinator); the coordinator that owns the task picks it up.

    Raises:
        TaskError: the step is not waiting for approval (code ``not_pending``).
    """
    if not gate_open(journal, decision):
        raise TaskError(
            f"task {decision.task_id} has no step {decision.step_id!r} waiting for approval "
            "(see troupe approvals)",
            code="not_pending",
        )
    envelope = Envelope.wrap(decision, sender=clip(decision.decided_by, 64), topic=Topics.APPROVALS)
    journal.append(decision.task_id, decision.type, envelope)


def record_cancel(journal: Journal, request: CancelTask) -> None:
    """Writes a cancel straight into the journal (``troupe cancel`` without a reachable
    coordinator); the task ends ``cancelled`` when its coordinator sees it or resumes it.

    Raises:
        TaskError: unknown or finished task (code ``not_running``).
    """
    info = journal.task(request.task_id)
    if info is None or info.status in TERMINAL:
        state = info.status if info is not None else "unknown"
        raise TaskError(f"task {request.task_id} is not running ({state})", code="not_running")
    envelope = Envelope.wrap(request, sender=clip(request.requested_by, 64), topic=Topics.CONTROL)
    journal.append(request.task_id, request.type, envelope)


def pending_in_journal(journal: Journal) -> list[ApprovalRequested]:
    """Open approval gates of every unfinished task, from the journal alone."""
    found: list[ApprovalRequested] = []
    for info in journal.tasks():
        if info.status in TERMINAL:
            continue
        history = History.from_entries(journal.entries(info.task_id))
        for gates in history.gates.values():
            if gates and gates[-1].decision is None and gates[-1].requests:
                found.append(gates[-1].requests[-1])
    return found
