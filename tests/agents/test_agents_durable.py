"""Durable coordinator, in process: journal, recovery, approvals, cancel, budgets, replay, fork.

The agents here are small fakes on the in-process bus so each test controls exactly when a
step answers; the real agents on Ray are exercised in test_agents_crash.py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents import Coordinator
from agents._coordinator import pending_in_journal, record_cancel, record_decision
from agents._journal import JournalConfig, SqliteJournal
from agents._journal_fold import fold
from agents._journal_models import StateChanged, StepAbandoned, StepCommitted, StepStarted
from agents._settings import ApprovalSettings
from protocols import (
    AgentError,
    AnyMessage,
    ApprovalDecided,
    Budget,
    CancelTask,
    Envelope,
    InProcessBus,
    Plan,
    PlanProposed,
    PlanRequested,
    ReviewRequested,
    ReviewVerdict,
    Step,
    StepAssigned,
    StepResult,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskSubmitted,
    ToolCall,
    Topics,
    Usage,
)


def _plan(*steps: Step) -> Plan:
    return Plan(steps=steps)


CHAIN = _plan(
    Step(id="s1", description="first", tool="ledger", input="one"),
    Step(
        id="s2", description="second", tool="ledger", input="two {{steps.s1}}", depends_on=("s1",)
    ),
    Step(id="s3", description="third", tool="ledger", input="three", depends_on=("s2",)),
)


class FakePlanner:
    name = "planner"

    def __init__(self, *plans: Plan, usage: Usage | None = None):
        self.plans = list(plans)
        self.requests: list[PlanRequested] = []
        self.usage = usage or Usage(model_calls=1, prompt_tokens=10, completion_tokens=5)

    async def handle(self, message: AnyMessage) -> AnyMessage:
        assert isinstance(message, PlanRequested)
        self.requests.append(message)
        plan = self.plans[min(len(self.requests), len(self.plans)) - 1]
        return PlanProposed(task_id=message.task_id, plan=plan, source="model", usage=self.usage)


class FakeExecutor:
    """Answers ``<input> done``; ``hold`` blocks chosen steps until released; every call and
    every side effect (de-duplicated by idempotency key, like a real tool) is recorded."""

    name = "executor"

    def __init__(self, *, usage: Usage | None = None):
        self.calls: list[StepAssigned] = []
        self.effects: dict[str, str] = {}
        self.hold: dict[str, asyncio.Event] = {}
        self.usage = usage or Usage(model_calls=1, prompt_tokens=20, completion_tokens=5)
        self.tool_arguments: Callable[[StepAssigned], str] = lambda a: a.step.input

    async def handle(self, message: AnyMessage) -> AnyMessage:
        assert isinstance(message, StepAssigned)
        self.calls.append(message)
        gate = self.hold.get(message.step.id)
        if gate is not None:
            await gate.wait()
        key = message.idempotency_key or ""
        output = self.effects.setdefault(key, f"{message.step.input} done")
        call = ToolCall(
            tool=message.step.tool, arguments=self.tool_arguments(message), output=output, ok=True
        )
        return StepResult(
            task_id=message.task_id,
            step_id=message.step.id,
            output=output,
            ok=True,
            tool_calls=(call,),
            attempt=message.attempt,
            usage=self.usage,
        )

    def ran(self) -> Counter[str]:
        return Counter(a.step.id for a in self.calls)


class FakeReviewer:
    name = "reviewer"

    def __init__(self, decide: Callable[[ReviewRequested], str] | None = None):
        self.decide = decide or (lambda r: "approve")
        self.requests: list[ReviewRequested] = []

    async def handle(self, message: AnyMessage) -> AnyMessage:
        assert isinstance(message, ReviewRequested)
        self.requests.append(message)
        decision = self.decide(message)
        return ReviewVerdict(
            task_id=message.task_id,
            step_id=message.step.id,
            decision=decision,  # type: ignore[arg-type]
            feedback="" if decision == "approve" else f"{decision} please",
            checked_by="rule",
        )


class Crew:
    def __init__(self, planner: FakePlanner, executor: FakeExecutor, reviewer: FakeReviewer):
        from agents import AgentConsumer

        self.planner, self.executor, self.reviewer = planner, executor, reviewer
        self.bus = InProcessBus()
        self.bus.subscribe(Topics.PLANNER, AgentConsumer(planner), group="p")
        self.bus.subscribe(Topics.EXECUTOR, AgentConsumer(executor), group="e")
        self.bus.subscribe(Topics.REVIEWER, AgentConsumer(reviewer), group="r")

    def coordinator(self, journal: SqliteJournal | None, **options: object) -> Coordinator:
        options.setdefault("poll_s", 0.05)
        return Coordinator(self.bus, None, journal=journal, **options)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> SqliteJournal:
    return SqliteJournal(JournalConfig(data_dir=tmp_path / "journal", synchronous="NORMAL"))


def _crew(*plans: Plan, reviewer: FakeReviewer | None = None) -> Crew:
    return Crew(FakePlanner(*(plans or (CHAIN,))), FakeExecutor(), reviewer or FakeReviewer())


def _task(task_id: str = "t1", **budget: object) -> TaskSubmitted:
    return TaskSubmitted(task_id=task_id, goal="do three things", budget=Budget(**budget))


def _kinds(journal: SqliteJournal, task_id: str) -> list[str]:
    return [e.kind for e in journal.entries(task_id)]


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# -- journal ---------------------------------------------------------------------------------


async def test_a_task_is_journaled_before_acting_and_its_log_folds_and_audits(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    outcome = await crew.coordinator(journal).run(_task())
    assert isinstance(outcome, TaskCompleted), outcome
    kinds = _kinds(journal, "t1")
    assert kinds[0] == "task.submitted"
    assert kinds[-2:] == ["task.completed", "state.changed"]
    # Each step: started before its result, the verdict and commit after.
    for step_id in ("s1", "s2", "s3", "final"):
        entries = journal.entries("t1")
        seqs = {
            type(e.payload).__name__: e.seq
            for e in entries
            if getattr(e.payload, "step_id", None) == step_id
            or getattr(getattr(e.payload, "payload", None), "step_id", None) == step_id
        }
        assert seqs["StepStarted"] < seqs["StepCommitted"]
    state = fold(journal.entries("t1"))
    assert state.status == "completed"
    assert set(state.committed) == {"s1", "s2", "s3", "final"}
    assert journal.audit("t1").ok
    statuses = [e.payload.to for e in journal.entries("t1") if isinstance(e.payload, StateChanged)]
    assert statuses == ["planning", "running", "reviewing", "completed"]
    # Step inputs referencing earlier outputs were rendered before dispatch.
    s2 = next(a for a in crew.executor.calls if a.step.id == "s2")
    assert s2.step.input == "two one done"
    assert s2.idempotency_key == "t1:s2:1"
    assert outcome.usage.model_calls == 1 + 4  # planner + four executor attempts


async def test_dispatches_wait_for_the_group_commit_and_the_window_writes_them(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    crew.executor.hold["s1"] = asyncio.Event()
    coordinator = crew.coordinator(journal, group_commit_s=1.0)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s1"] == 1)
    # s1 is dispatched; its step.started waits in memory for the task's next write
    assert "step.started" not in _kinds(journal, "t1")
    await _until(lambda: "step.started" in _kinds(journal, "t1"), timeout=5.0)  # window closed
    crew.executor.hold["s1"].set()
    outcome = await coordinator.wait("t1")
    assert isinstance(outcome, TaskCompleted), outcome
    kinds = _kinds(journal, "t1")
    assert kinds.count("step.started") == 4 and kinds.count("step.committed") == 4
    assert fold(journal.entries("t1")).status == "completed"
    assert journal.audit("t1").ok


async def test_a_crash_inside_the_group_commit_window_resends_the_step_with_its_key(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    first = crew.coordinator(journal, group_commit_s=30.0)
    await first.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    await first.close(flush=False)  # a crash: s2's dispatch, still in memory, is lost
    started = [e.payload for e in journal.entries("t1") if isinstance(e.payload, StepStarted)]
    assert [s.step_id for s in started] == ["s1"]
    crew.executor.hold["s2"].set()
    second = crew.coordinator(journal)
    assert await second.recover() == ["t1"]
    outcome = await second.wait("t1")
    assert isinstance(outcome, TaskCompleted), outcome
    # s1 was committed and did not run again; s2 ran again as attempt 1, same key
    assert crew.executor.ran()["s1"] == 1
    assert [a.idempotency_key for a in crew.executor.calls if a.step.id == "s2"] == [
        "t1:s2:1",
        "t1:s2:1",
    ]
    assert len({k for k in crew.executor.effects if k.startswith("t1:s2")}) == 1


class _RecordingJournal:
    """A journal that notes each write (its kinds and whether it fsyncs) and each ``sync``."""

    def __init__(self, journal: SqliteJournal):
        self._journal = journal
        self.calls: list[tuple[str, list[str], bool | str]] = []

    @classmethod
    def full(cls, tmp_path: Path) -> _RecordingJournal:
        """Over a ``synchronous=FULL`` journal under ``tmp_path``."""
        return cls(SqliteJournal(JournalConfig(data_dir=tmp_path / "journal", synchronous="FULL")))

    def append(self, task_id: str, kind: str, payload: Any) -> Any:
        self.calls.append(("append", [kind], True))
        return self._journal.append(task_id, kind, payload)

    def append_many(self, task_id: str, items: Any, *, sync: bool = True) -> Any:
        self.calls.append(("append", [kind for kind, _ in items], sync))
        return self._journal.append_many(task_id, items, sync=sync)

    def sync(self) -> None:
        self.calls.append(("sync", [], threading.current_thread().name))
        self._journal.sync()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


async def test_plans_and_verdicts_commit_at_once_and_reach_the_disk_off_the_event_loop(
    tmp_path: Path,
) -> None:
    journal = _RecordingJournal.full(tmp_path)
    crew = _crew()
    coordinator = crew.coordinator(journal, group_commit_s=0)  # fsync each at once
    outcome = await coordinator.run(_task())
    await coordinator.flush()
    assert isinstance(outcome, TaskCompleted), outcome
    calls = journal.calls
    soon = [
        i
        for i, (op, kinds, _) in enumerate(calls)
        if op == "append" and ("plan.proposed" in kinds or "review.verdict" in kinds)
    ]
    assert len(soon) == 1 + 4  # the plan and four verdicts, each committed without an fsync
    assert all(calls[i][2] is False for i in soon)
    # each is followed by an fsync of the log in the coordinator's sync thread (one fsync
    # may cover several) or by a write that fsyncs itself
    for i in soon:
        assert any(op == "sync" or sync is True for op, _, sync in calls[i + 1 :]), calls[i]
    threads = {str(name) for op, _, name in calls if op == "sync"}
    assert threads and all(name.startswith("journal-sync") for name in threads)
    # what others are told of is synced when written: the outcome (``run`` tells nobody of
    # the submission before it; ``submit`` does, see the next test)
    synced = [kinds for op, kinds, sync in calls if op == "append" and sync is True]
    assert "task.completed" in {kind for kinds in synced for kind in kinds}
    assert calls[0] == ("append", ["task.submitted"], False)
    # a process crash now loses nothing: another connection reads every entry
    with SqliteJournal(JournalConfig(data_dir=tmp_path / "journal")) as again:
        assert fold(again.entries("t1")).status == "completed"
        assert set(fold(again.entries("t1")).committed) == {"s1", "s2", "s3", "final"}


async def test_a_submission_is_fsynced_before_submit_returns(tmp_path: Path) -> None:
    journal = _RecordingJournal.full(tmp_path)
    crew = _crew()
    crew.executor.hold["s1"] = asyncio.Event()
    coordinator = crew.coordinator(journal)
    assert await coordinator.submit(_task()) == "t1"
    assert journal.calls[0] == ("append", ["task.submitted"], True)
    crew.executor.hold["s1"].set()
    assert isinstance(await coordinator.wait("t1", timeout_s=5), TaskCompleted)
    await coordinator.close()


def _syncs(journal: _RecordingJournal) -> list[tuple[str, list[str], bool | str]]:
    return [call for call in journal.calls if call[0] == "sync"]


def _appended_before(journal: _RecordingJournal, call: object) -> list[str]:
    index = journal.calls.index(call)  # type: ignore[arg-type]
    return [kind for op, kinds, _ in journal.calls[:index] if op == "append" for kind in kinds]


async def test_the_soon_writes_of_one_window_share_one_fsync_and_a_synced_write_ends_it(
    tmp_path: Path,
) -> None:
    journal = _RecordingJournal.full(tmp_path)
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    coordinator = crew.coordinator(journal, group_commit_s=1.0)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    await _until(lambda: bool(_syncs(journal)))  # the window closed while s2 was held
    [sync] = _syncs(journal)
    assert str(sync[2]).startswith("journal-sync")
    # one fsync, off the event loop, for the plan and s1's verdict, both committed before it
    assert {"plan.proposed", "review.verdict"} <= set(_appended_before(journal, sync))
    crew.executor.hold["s2"].set()
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    await coordinator.flush()
    # the later verdicts came within a window that the outcome's synced write closed
    assert len(_syncs(journal)) == 1
    assert journal.calls[-1][1][0] == "task.completed" and journal.calls[-1][2] is True
    await coordinator.close()


async def test_flush_fsyncs_the_soon_writes_whose_window_is_still_open(tmp_path: Path) -> None:
    journal = _RecordingJournal.full(tmp_path)
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    coordinator = crew.coordinator(journal, group_commit_s=30.0)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    assert not _syncs(journal)  # the plan and s1's verdict wait for their window
    await coordinator.flush()
    [sync] = _syncs(journal)
    assert {"plan.proposed", "review.verdict"} <= set(_appended_before(journal, sync))
    crew.executor.hold["s2"].set()
    assert isinstance(await coordinator.wait("t1", timeout_s=5), TaskCompleted)
    await coordinator.close()


async def test_submitting_a_known_task_again_joins_it(journal: SqliteJournal) -> None:
    crew = _crew()
    coordinator = crew.coordinator(journal)
    first = await coordinator.run(_task())
    again = await coordinator.run(_task())
    assert isinstance(again, TaskCompleted)
    assert again.final_answer == first.final_answer
    assert len(crew.planner.requests) == 1


async def test_wait_for_an_unknown_task_says_so(journal: SqliteJournal) -> None:
    with pytest.raises(TaskError, match="no task 'nope'"):
        await _crew().coordinator(journal).wait("nope")


# -- recovery --------------------------------------------------------------------------------


async def test_recovery_does_not_rerun_committed_steps_and_resends_in_flight_with_same_key(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    first = crew.coordinator(journal)
    await first.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    await first.close()  # the coordinator dies with s2 in flight
    assert fold(journal.entries("t1")).in_flight["s2"].idempotency_key == "t1:s2:1"

    crew.executor.hold.clear()
    second = crew.coordinator(journal)
    assert await second.recover() == ["t1"]
    outcome = await second.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    assert crew.executor.ran() == Counter({"s1": 1, "s2": 2, "s3": 1, "final": 1})
    keys = [a.idempotency_key for a in crew.executor.calls if a.step.id == "s2"]
    assert keys == ["t1:s2:1", "t1:s2:1"]
    assert len(crew.planner.requests) == 1, "the recorded plan was reused"
    state = fold(journal.entries("t1"))
    assert state.status == "completed"
    assert journal.audit("t1").ok
    assert any(e.message_type == "task.recovered" for e in outcome.trace)


async def test_a_finished_task_resumed_returns_its_recorded_outcome(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    outcome = await crew.coordinator(journal).run(_task())
    calls = len(crew.executor.calls)
    again = await crew.coordinator(journal).wait("t1")
    assert again == outcome
    assert len(crew.executor.calls) == calls


# -- approvals -------------------------------------------------------------------------------

GATED = _plan(
    Step(id="s1", description="prepare", tool="ledger", input="draft"),
    Step(
        id="s2",
        description="send it",
        tool="ledger",
        input="send {{steps.s1}}",
        depends_on=("s1",),
        requires_approval=True,
    ),
)


def _decision(step: str = "s2", decision: str = "approve", **fields: object) -> ApprovalDecided:
    return ApprovalDecided(
        task_id="t1",
        step_id=step,
        decision=decision,
        decided_by="alice",
        **fields,  # type: ignore[arg-type]
    )


async def test_an_approval_gate_waits_then_the_approved_step_runs_once(
    journal: SqliteJournal,
) -> None:
    crew = _crew(GATED)
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: bool(coordinator.pending_approvals("t1")))
    assert crew.executor.ran()["s2"] == 0
    assert coordinator.status("t1").status == "awaiting_approval"  # type: ignore[union-attr]
    [request] = coordinator.pending_approvals()
    assert request.step.id == "s2" and request.deadline is not None
    await coordinator.decide(_decision())
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    assert crew.executor.ran()["s2"] == 1
    decided = [e for e in journal.entries("t1") if e.kind == "approval.decided"]
    assert decided[0].payload.payload.decided_by == "alice"  # type: ignore[union-attr]


async def test_deciding_a_step_that_is_not_waiting_is_a_clear_error(
    journal: SqliteJournal,
) -> None:
    coordinator = _crew().coordinator(journal)
    await coordinator.run(_task())
    with pytest.raises(TaskError, match="no step 's2' waiting for approval"):
        await coordinator.decide(_decision())


async def test_an_edit_changes_the_steps_input(journal: SqliteJournal) -> None:
    crew = _crew(GATED)
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: bool(coordinator.pending_approvals()))
    await coordinator.decide(_decision(decision="edit", edited_input="send the short one"))
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted)
    [s2] = [a for a in crew.executor.calls if a.step.id == "s2"]
    assert s2.step.input == "send the short one"


async def test_a_rejection_goes_back_to_the_planner_with_the_reason(
    journal: SqliteJournal,
) -> None:
    replan = _plan(Step(id="s1", description="something else", tool="ledger", input="other"))
    crew = _crew(GATED, replan)
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: bool(coordinator.pending_approvals()))
    await coordinator.decide(_decision(decision="reject", reason="wrong recipient"))
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    assert crew.executor.ran()["s2"] == 0
    assert "rejected by alice: wrong recipient" in (crew.planner.requests[1].feedback or "")


async def test_an_unanswered_approval_is_rejected_at_its_deadline(journal: SqliteJournal) -> None:
    crew = _crew(GATED)
    coordinator = crew.coordinator(journal, approvals=ApprovalSettings(timeout_s=0.2))
    outcome = await coordinator.run(_task(max_replans=0))
    assert isinstance(outcome, TaskFailed)
    assert "rejected by deadline" in outcome.reason
    assert crew.executor.ran()["s2"] == 0


async def test_an_unanswered_approval_escalates_once_before_rejecting(
    journal: SqliteJournal,
) -> None:
    crew = _crew(GATED)
    escalated: list[Envelope] = []

    class Watcher:
        async def deliver(self, envelope: Envelope) -> None:
            escalated.append(envelope)

    crew.bus.subscribe(Topics.ESCALATIONS, Watcher(), group="oncall")  # type: ignore[arg-type]
    settings = ApprovalSettings(timeout_s=0.2, on_timeout="escalate")
    outcome = await crew.coordinator(journal, approvals=settings).run(_task(max_replans=0))
    assert isinstance(outcome, TaskFailed)
    requests = [e.payload.payload for e in journal.entries("t1") if e.kind == "approval.requested"]
    assert [r.escalation for r in requests] == [0, 1]  # type: ignore[union-attr]
    await _until(lambda: bool(escalated))
    assert escalated[0].payload.escalation == 1  # type: ignore[union-attr]


async def test_a_decision_written_by_another_process_is_picked_up(
    journal: SqliteJournal, tmp_path: Path
) -> None:
    crew = _crew(GATED)
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: bool(coordinator.pending_approvals()))
    other = SqliteJournal(JournalConfig(data_dir=tmp_path / "journal", synchronous="NORMAL"))
    assert [r.step.id for r in pending_in_journal(other)] == ["s2"]
    record_decision(other, _decision())
    with pytest.raises(TaskError, match="no step 's2' waiting"):
        record_decision(other, _decision())
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome


async def test_an_approval_survives_a_coordinator_restart(journal: SqliteJournal) -> None:
    crew = _crew(GATED)
    first = crew.coordinator(journal)
    await first.submit(_task())
    await _until(lambda: bool(first.pending_approvals()))
    await first.close()
    record_decision(journal, _decision())  # decided while no coordinator runs
    second = crew.coordinator(journal)
    await second.recover()
    outcome = await second.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    assert crew.executor.ran() == Counter({"s1": 1, "s2": 1, "final": 1})


async def test_high_impact_tools_always_wait_for_approval(journal: SqliteJournal) -> None:
    plan = _plan(Step(id="s1", description="wire money", tool="pay", input="100"))
    crew = _crew(plan)
    coordinator = crew.coordinator(journal, high_impact_tools={"pay"})
    await coordinator.submit(_task())
    await _until(lambda: bool(coordinator.pending_approvals()))
    assert "high-impact" in coordinator.pending_approvals()[0].reason
    await coordinator.decide(_decision(step="s1"))
    assert isinstance(await coordinator.wait("t1", timeout_s=5), TaskCompleted)


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_stops_a_running_task_and_records_the_abandoned_step(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    assert await coordinator.cancel("t1", reason="changed my mind", requested_by="bob")
    outcome = await coordinator.wait("t1")
    assert isinstance(outcome, TaskFailed) and outcome.cancelled
    assert "cancelled by bob: changed my mind" in outcome.reason
    assert [r.step.id for r in outcome.steps] == ["s1"], "work done so far is kept"
    abandoned = [e.payload for e in journal.entries("t1") if isinstance(e.payload, StepAbandoned)]
    assert [(a.step_id, a.attempt) for a in abandoned] == [("s2", 1)]
    assert fold(journal.entries("t1")).status == "cancelled"
    assert not await coordinator.cancel("t1")


async def test_a_cancel_written_to_the_journal_stops_the_task(journal: SqliteJournal) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    record_cancel(journal, CancelTask(task_id="t1", reason="from the cli"))
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskFailed) and outcome.cancelled
    with pytest.raises(TaskError, match="not running"):
        record_cancel(journal, CancelTask(task_id="t1"))


# -- budgets ---------------------------------------------------------------------------------


async def test_the_model_call_budget_ends_the_task_keeping_work_done(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    outcome = await crew.coordinator(journal).run(_task(max_model_calls=3))
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "budget_model_calls"
    assert [r.step.id for r in outcome.steps] == ["s1", "s2"]
    assert crew.executor.ran()["s3"] == 0
    assert fold(journal.entries("t1")).status == "failed"


async def test_the_token_budget_ends_the_task(journal: SqliteJournal) -> None:
    outcome = await _crew().coordinator(journal).run(_task(max_tokens=40))
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "budget_tokens"
    assert outcome.usage.tokens >= 40


async def test_the_deadline_ends_the_task_and_abandons_the_step_in_flight(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    outcome = await crew.coordinator(journal).run(_task(deadline_s=0.3))
    assert isinstance(outcome, TaskFailed) and not outcome.cancelled
    assert outcome.error is not None and outcome.error.code == "deadline_exceeded"
    assert [r.step.id for r in outcome.steps] == ["s1"]
    assert any(isinstance(e.payload, StepAbandoned) for e in journal.entries("t1"))


async def test_a_repeated_identical_tool_call_is_a_loop(journal: SqliteJournal) -> None:
    crew = _crew(reviewer=FakeReviewer(lambda r: "revise"))
    crew.executor.tool_arguments = lambda a: "same"
    outcome = await crew.coordinator(journal).run(
        _task(max_revisions=5, max_identical_tool_calls=3)
    )
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "loop_detected"
    assert crew.executor.ran()["s1"] == 3


async def test_revisions_are_bounded_per_step(journal: SqliteJournal) -> None:
    plan = _plan(Step(id="s1", description="x", tool="ledger", input="a", max_revisions=0))
    crew = _crew(plan, reviewer=FakeReviewer(lambda r: "revise"))
    outcome = await crew.coordinator(journal).run(
        _task(max_revisions=3, on_revisions_exhausted="fail")
    )
    assert isinstance(outcome, TaskFailed)
    assert crew.executor.ran()["s1"] == 1


# -- replay and fork -------------------------------------------------------------------------


async def test_replay_reaches_the_same_result_with_no_agent_calls(journal: SqliteJournal) -> None:
    crew = _crew()
    outcome = await crew.coordinator(journal).run(_task())
    calls = (len(crew.planner.requests), len(crew.executor.calls), len(crew.reviewer.requests))
    entries = len(journal.entries("t1"))
    replayed = await crew.coordinator(journal).replay("t1")
    assert isinstance(replayed, TaskCompleted)
    assert replayed.final_answer == outcome.final_answer
    assert [r.output for r in replayed.steps] == [r.output for r in outcome.steps]
    assert replayed.usage == outcome.usage
    assert calls == (
        len(crew.planner.requests),
        len(crew.executor.calls),
        len(crew.reviewer.requests),
    )
    assert len(journal.entries("t1")) == entries, "replay writes nothing"


async def test_replay_of_a_damaged_history_says_it_diverged(journal: SqliteJournal) -> None:
    crew = _crew()
    crew.executor.hold["s2"] = asyncio.Event()
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task())
    await _until(lambda: crew.executor.ran()["s2"] == 1)
    await coordinator.close()
    replayed = await crew.coordinator(journal).replay("t1")
    assert isinstance(replayed, TaskFailed)
    assert replayed.error is not None and replayed.error.code == "replay_diverged"


async def test_fork_keeps_earlier_steps_and_reruns_from_the_chosen_one(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    coordinator = crew.coordinator(journal)
    await coordinator.run(_task())
    before = crew.executor.ran()
    fork_id = await coordinator.fork("t1", "s2")
    outcome = await coordinator.wait(fork_id, timeout_s=5)
    assert isinstance(outcome, TaskCompleted), outcome
    after = crew.executor.ran() - before
    assert after == Counter({"s2": 1, "s3": 1, "final": 1})
    assert len(crew.planner.requests) == 1, "the fork runs the original's plan"
    assert [r.output for r in outcome.steps][:1] == ["one done"]
    assert journal.audit(fork_id).ok
    assert fold(journal.entries(fork_id)).status == "completed"
    with pytest.raises(TaskError, match="no step 'zz'"):
        await coordinator.fork("t1", "zz")


async def test_workflow_plans_skip_the_planner_and_a_model_reject_means_revise(
    journal: SqliteJournal,
) -> None:
    crew = _crew(reviewer=FakeReviewer(lambda r: "reject"))
    task = _task(max_revisions=1, on_revisions_exhausted="fail").model_copy(
        update={"plan": CHAIN, "workflow": "three"}
    )
    outcome = await crew.coordinator(journal).run(task)
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "revision_budget_spent"
    assert crew.executor.ran()["s1"] == 2, "redone once, not replanned"
    assert crew.planner.requests == []


async def test_a_human_reject_fails_a_workflow(journal: SqliteJournal) -> None:
    crew = _crew()
    coordinator = crew.coordinator(journal)
    await coordinator.submit(_task().model_copy(update={"plan": GATED, "workflow": "gated"}))
    await _until(lambda: bool(coordinator.pending_approvals()))
    assert coordinator.pending_approvals()[0].step.input == "send draft done"
    await coordinator.decide(_decision(decision="reject", reason="no"))
    outcome = await coordinator.wait("t1", timeout_s=5)
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "workflow_rejected"
    assert "rejected by alice: no" in outcome.reason


async def test_a_reference_to_a_step_that_is_not_a_dependency_is_refused(
    journal: SqliteJournal,
) -> None:
    plan = _plan(
        Step(id="s1", description="a", tool="ledger", input="a"),
        Step(id="s2", description="b", tool="ledger", input="{{steps.s1}}"),
    )
    outcome = await _crew(plan).coordinator(journal).run(_task())
    assert isinstance(outcome, TaskFailed)
    assert "add 's1' to its depends_on" in outcome.reason


async def test_without_a_journal_tasks_still_run(journal: SqliteJournal) -> None:
    crew = _crew()
    outcome = await crew.coordinator(None).run(_task())
    assert isinstance(outcome, TaskCompleted)
    with pytest.raises(Exception, match="without a journal"):
        await crew.coordinator(None).replay("t1")


async def test_an_agent_error_is_journaled_and_a_retryable_one_retried(
    journal: SqliteJournal,
) -> None:
    crew = _crew()
    failures = {"left": 1}
    original = crew.executor.handle

    async def flaky(message: AnyMessage) -> AnyMessage:
        if failures["left"]:
            failures["left"] -= 1
            raise AgentError("model busy", code="model_unavailable", retryable=True)
        return await original(message)

    crew.executor.handle = flaky  # type: ignore[method-assign]
    outcome = await crew.coordinator(journal).run(_task())
    assert isinstance(outcome, TaskCompleted)
    assert "error.report" in _kinds(journal, "t1")
    started = [e.payload for e in journal.entries("t1") if isinstance(e.payload, StepStarted)]
    assert [(s.step_id, s.attempt) for s in started][:2] == [("s1", 1), ("s1", 1)]
    assert fold(journal.entries("t1")).in_flight == {}
    commits = [e.payload for e in journal.entries("t1") if isinstance(e.payload, StepCommitted)]
    assert [c.step_id for c in commits] == ["s1", "s2", "s3", "final"]


def test_a_coordinator_driven_from_several_event_loops_syncs_and_flushes(tmp_path: Path) -> None:
    journal = _RecordingJournal.full(tmp_path)
    coordinator = _crew().coordinator(journal, group_commit_s=0)  # an fsync per soon write
    for task_id in ("t1", "t2"):  # each in its own loop, as in-process callers may do
        journal.calls.clear()
        outcome = asyncio.run(coordinator.run(_task(task_id)))
        assert isinstance(outcome, TaskCompleted), outcome
        assert any(op == "sync" for op, _, _ in journal.calls), task_id
    asyncio.run(coordinator.flush())  # a third loop: the earlier loops' fsync task is not its


def _in_event_loop(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))

    return run


# The tests above are coroutines; each runs in its own event loop.
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and inspect.iscoroutinefunction(_test):
        globals()[_name] = _in_event_loop(_test)
