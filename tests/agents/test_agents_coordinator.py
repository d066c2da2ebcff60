"""The coordinator's state machine with real agents on the in-process bus and scripted models."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents import AgentConsumer, Coordinator, Executor, ModelRequest, default_tools
from memory import EmbeddedStore, Episode, LocalMemory, RecallQuery, ScoredEpisode
from protocols import Budget, InProcessBus, TaskCompleted, TaskFailed, TaskSubmitted, Topics
from tests.agents.team import build_team
from tests.fakes import ScriptedModelClient

GOAL = "What is 17 * 23 + 4?"
TWO_STEP_PLAN = {
    "steps": [
        {"description": "multiply", "tool": "calculator", "input": "17 * 23", "depends_on": []},
        {"description": "add four", "tool": "answer", "input": "", "depends_on": [1]},
    ]
}
APPROVE = {"decision": "approve", "feedback": ""}


def _task(**budget: object) -> TaskSubmitted:
    return TaskSubmitted(task_id="t1", goal=GOAL, budget=Budget.model_validate(budget))


def _run(team_task: tuple[object, TaskSubmitted]) -> TaskCompleted | TaskFailed:
    team, task = team_task
    coordinator = team.coordinator  # type: ignore[attr-defined]

    async def run() -> TaskCompleted | TaskFailed:
        try:
            return await coordinator.run(task)  # type: ignore[no-any-return]
        finally:  # its memory writes follow the outcome: let them land before the loop ends
            await coordinator.flush()

    return asyncio.run(run())


def test_task_runs_plan_steps_review_and_final_answer(tmp_path: Path) -> None:
    team = build_team(
        ScriptedModelClient(("plan", TWO_STEP_PLAN)),
        ScriptedModelClient(
            ("step_answer", {"answer": "391 + 4 = 395"}),
            ("step_answer", {"answer": "395"}),
        ),
        # s1 is approved by rule (the calculator computed it): only s2 and final reach the model
        ScriptedModelClient(("review", APPROVE), ("review", APPROVE)),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task()))
    assert isinstance(outcome, TaskCompleted), outcome
    assert outcome.final_answer == "395"
    assert [r.step.id for r in outcome.steps] == ["s1", "s2", "final"]
    assert outcome.steps[0].output == "391"
    assert all(r.approved for r in outcome.steps)
    types = [e.message_type for e in outcome.trace]
    assert types[:3] == ["task.submitted", "plan.requested", "plan.proposed"]
    assert types.count("step.assigned") == 3 and types.count("review.verdict") == 3
    assert [e.seq for e in outcome.trace] == list(range(len(outcome.trace)))
    team.assert_complete()
    # the executor got s1's output as input for s2
    s2_prompt = team.executor_model.requests[0].messages[-1]["content"]
    assert "Result of s1: 391" in s2_prompt


def test_revise_feedback_reaches_the_executor_and_is_bounded(tmp_path: Path) -> None:
    one_step = {"steps": [{"description": "say", "tool": "answer", "input": "", "depends_on": []}]}
    revise = {"decision": "revise", "feedback": "mention the number"}
    team = build_team(
        ScriptedModelClient(one_step),
        ScriptedModelClient({"answer": "a"}, {"answer": "b"}, {"answer": "final"}),
        ScriptedModelClient(revise, revise, APPROVE),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task(max_revisions=1, on_revisions_exhausted="accept")))
    assert isinstance(outcome, TaskCompleted)
    first = outcome.steps[0]
    assert (first.output, first.revisions, first.approved) == ("b", 1, False)
    assert "mention the number" in team.executor_model.requests[1].messages[-1]["content"]
    team.assert_complete()


def test_revisions_exhausted_can_fail_the_task(tmp_path: Path) -> None:
    one_step = {"steps": [{"description": "say", "tool": "answer", "input": "", "depends_on": []}]}
    revise = {"decision": "revise", "feedback": "no"}
    team = build_team(
        ScriptedModelClient(one_step),
        ScriptedModelClient({"answer": "a"}, {"answer": "b"}, {"answer": "c"}),
        ScriptedModelClient(revise, revise, revise),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task(max_revisions=2, on_revisions_exhausted="fail")))
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "revision_budget_spent"
    assert "max_revisions=2" in outcome.reason
    team.assert_complete()


def test_reject_replans_with_feedback_until_the_budget_is_spent(tmp_path: Path) -> None:
    one_step = {"steps": [{"description": "say", "tool": "answer", "input": "", "depends_on": []}]}
    reject = {"decision": "reject", "feedback": "wrong approach"}
    team = build_team(
        ScriptedModelClient(one_step, one_step),
        ScriptedModelClient({"answer": "a"}, {"answer": "b"}),
        ScriptedModelClient(reject, reject),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task(max_replans=1)))
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None and outcome.error.code == "replan_budget_spent"
    assert "wrong approach" in team.planner_model.requests[1].messages[-1]["content"]
    team.assert_complete()


def test_invalid_plans_are_re_asked_then_fall_back_to_one_step(tmp_path: Path) -> None:
    forward = {
        "steps": [
            {"description": "a", "tool": "answer", "input": "", "depends_on": [2]},
            {"description": "b", "tool": "answer", "input": "", "depends_on": []},
        ]
    }
    team = build_team(
        ScriptedModelClient(forward, "not json at all"),
        ScriptedModelClient({"answer": "x"}, {"answer": "x"}),
        ScriptedModelClient(APPROVE, APPROVE),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task()))
    assert isinstance(outcome, TaskCompleted)
    proposed = next(e for e in outcome.trace if e.message_type == "plan.proposed")
    assert proposed.summary.startswith("fallback plan, 1 step(s)")
    retry_prompt = team.planner_model.requests[1].messages[-1]["content"]
    assert "step 1 depends on step 2, which is not earlier" in retry_prompt
    team.assert_complete()


def test_a_completed_plan_is_reused_from_memory(tmp_path: Path) -> None:
    first = build_team(
        ScriptedModelClient(TWO_STEP_PLAN),
        ScriptedModelClient({"answer": "395"}, {"answer": "395"}),
        ScriptedModelClient(APPROVE, APPROVE),
        data_dir=tmp_path,
    )
    assert isinstance(_run((first, _task())), TaskCompleted)
    # a new team over the same memory directory: the planner must not call its model
    second = build_team(
        ScriptedModelClient(),
        ScriptedModelClient({"answer": "395"}, {"answer": "395"}),
        ScriptedModelClient(APPROVE, APPROVE),
        data_dir=tmp_path,
    )
    outcome = _run((second, TaskSubmitted(task_id="t2", goal=GOAL.upper())))
    assert isinstance(outcome, TaskCompleted)
    proposed = next(e for e in outcome.trace if e.message_type == "plan.proposed")
    assert proposed.summary.startswith("memory plan, 2 step(s)")
    second.assert_complete()
    summaries = asyncio.run(
        second.memory.recall(RecallQuery(text=GOAL, kinds=("task_summary",), k=10))
    )
    assert {s.episode.task_id for s in summaries} == {"t1", "t2"}


def test_an_agent_crash_fails_the_task_with_a_report_not_a_traceback(tmp_path: Path) -> None:
    def explode(request: ModelRequest) -> dict[str, object]:
        raise RuntimeError("model client bug")

    team = build_team(
        ScriptedModelClient(explode),
        ScriptedModelClient(),
        ScriptedModelClient(),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task()))
    assert isinstance(outcome, TaskFailed)
    assert outcome.error is not None
    assert outcome.error.code == "internal_error"
    assert "model client bug" in outcome.reason
    assert outcome.trace[-1].message_type == "error.report"


def test_a_retryable_agent_failure_is_retried_once(tmp_path: Path) -> None:
    one_step = {"steps": [{"description": "say", "tool": "answer", "input": "", "depends_on": []}]}
    team = build_team(
        ScriptedModelClient(one_step),
        # unparseable output is retryable: the coordinator asks the executor again
        ScriptedModelClient("{broken", {"answer": "ok"}, {"answer": "done"}),
        ScriptedModelClient(APPROVE, APPROVE),
        data_dir=tmp_path,
    )
    outcome = _run((team, _task()))
    assert isinstance(outcome, TaskCompleted), outcome
    errors = [e for e in outcome.trace if e.message_type == "error.report"]
    assert len(errors) == 1 and "bad_model_output" in errors[0].summary
    team.assert_complete()


def test_independent_steps_run_concurrently(tmp_path: Path) -> None:
    parallel = {
        "steps": [
            {"description": "a", "tool": "answer", "input": "", "depends_on": []},
            {"description": "b", "tool": "answer", "input": "", "depends_on": []},
        ]
    }
    in_flight = 0
    peak = 0

    async def slow_answer(request: ModelRequest) -> dict[str, str]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return {"answer": "x"}

    class SlowModel(ScriptedModelClient):
        async def complete(self, request: ModelRequest):  # type: ignore[no-untyped-def]
            reply = await slow_answer(request)
            self.requests.append(request)
            return await ScriptedModelClient(reply).complete(request)

    team = build_team(
        ScriptedModelClient(parallel),
        SlowModel(),
        ScriptedModelClient(APPROVE, APPROVE, APPROVE),
        data_dir=tmp_path,
        executors=2,
    )
    outcome = _run((team, _task()))
    assert isinstance(outcome, TaskCompleted)
    assert peak == 2


def test_invented_numbers_and_a_vague_final_answer_are_sent_back(tmp_path: Path) -> None:
    copied = {  # the plan copies numbers from the prompt's example, not from the goal
        "steps": [
            {"description": "compute", "tool": "calculator", "input": "12 * 7", "depends_on": []}
        ]
    }
    team = build_team(
        ScriptedModelClient(copied),
        ScriptedModelClient(
            ("expression", {"expression": "17 * 23 + 4"}),
            ("step_answer", {"answer": "It is a number."}),
            ("step_answer", {"answer": "17 * 23 + 4 = 395"}),
        ),
        ScriptedModelClient(),  # every verdict here is decided by rule
        data_dir=tmp_path,
    )
    outcome = _run((team, _task(max_revisions=1)))
    assert isinstance(outcome, TaskCompleted), outcome
    s1, final = outcome.steps
    assert (s1.output, s1.revisions, s1.approved) == ("395", 1, True)
    assert (final.output, final.revisions, final.approved) == ("17 * 23 + 4 = 395", 1, True)
    feedback = team.executor_model.requests[0].messages[-1]["content"]
    assert "uses 7, 12, found neither in the goal" in feedback
    assert (
        "must state the computed result: 395"
        in team.executor_model.requests[2].messages[-1]["content"]
    )
    team.assert_complete()


class _CountingMemory:
    """The team's memory, counting the recall calls that reach it."""

    def __init__(self, inner: LocalMemory):
        self.inner = inner
        self.recalls = 0
        self.batches: list[int] = []

    async def recall(self, query: RecallQuery) -> list[ScoredEpisode]:
        self.recalls += 1
        return await self.inner.recall(query)

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        self.batches.append(len(queries))
        return await self.inner.recall_many(queries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _recalling_team(
    memory: Any, plan: dict[str, Any], executor_model: ScriptedModelClient, reviews: int, path: Path
) -> tuple[Coordinator, Executor]:
    """A coordinator with ``memory``, the scripted ``plan``, ``reviews`` approvals, and an
    executor that recalls from ``memory`` too."""
    executor = Executor(executor_model, memory, default_tools(), workspace_root=path / "ws")
    team = build_team(
        ScriptedModelClient(plan),
        executor_model,
        ScriptedModelClient(*[APPROVE] * reviews),
        data_dir=path,
    )
    bus = InProcessBus()
    bus.subscribe(Topics.PLANNER, AgentConsumer(team.planner), group="p")
    bus.subscribe(Topics.EXECUTOR, AgentConsumer(executor), group="e")
    bus.subscribe(Topics.REVIEWER, AgentConsumer(team.reviewer), group="r")
    return Coordinator(bus, memory), executor


def test_the_coordinator_recalls_for_every_model_step_in_one_call(tmp_path: Path) -> None:
    seen = LocalMemory(EmbeddedStore(None))
    earlier = Episode.create(
        kind="observation",
        content="adding four to 391 gives 395",
        agent="executor-0",
        task_id="earlier-task",
    )
    asyncio.run(seen.remember([earlier]))
    memory = _CountingMemory(seen)
    executor_model = ScriptedModelClient({"answer": "395"}, {"answer": "395"})
    coordinator, _ = _recalling_team(memory, TWO_STEP_PLAN, executor_model, 2, tmp_path)

    outcome = asyncio.run(coordinator.run(_task()))

    assert isinstance(outcome, TaskCompleted), outcome
    # "add four" and the final answer are model steps: one recall_many for both, and the
    # executor did not ask memory itself
    assert memory.batches == [2] and memory.recalls == 0
    prompts = [r.messages[-1]["content"] for r in executor_model.requests]
    assert all("adding four to 391 gives 395" in p for p in prompts), prompts
    assert all("From memory (observation, from agent" in p for p in prompts)


class _HeldMemory(_CountingMemory):
    """Counts recalls like ``_CountingMemory``; every ``recall_many`` after the first waits
    for ``release``."""

    def __init__(self, inner: LocalMemory):
        super().__init__(inner)
        self.release = asyncio.Event()

    async def recall_many(self, queries: Sequence[RecallQuery]) -> list[list[ScoredEpisode]]:
        self.batches.append(len(queries))
        if len(self.batches) > 1:
            await self.release.wait()
        return await self.inner.recall_many(queries)


def test_the_first_steps_start_without_waiting_for_the_later_steps_recall(
    tmp_path: Path,
) -> None:
    chain = {
        "steps": [
            {"description": "multiply", "tool": "answer", "input": "", "depends_on": []},
            {"description": "add four", "tool": "answer", "input": "", "depends_on": [1]},
        ]
    }
    memory = _HeldMemory(LocalMemory(EmbeddedStore(None)))
    executor_model = ScriptedModelClient({"answer": "391"}, {"answer": "395"}, {"answer": "395"})
    coordinator, executor = _recalling_team(memory, chain, executor_model, 3, tmp_path)

    async def scenario() -> object:
        task_id = await coordinator.submit(_task())
        for _ in range(500):  # the first step runs while the later steps' recall is held
            if executor_model.requests:
                break
            await asyncio.sleep(0.01)
        assert len(executor_model.requests) == 1
        assert memory.batches == [1, 2]  # s1 now; s2 and the final answer sent alongside
        memory.release.set()
        outcome = await coordinator.wait(task_id)
        await coordinator.flush()
        await executor.flush()
        return outcome

    outcome = asyncio.run(scenario())

    assert isinstance(outcome, TaskCompleted), outcome
    assert len(executor_model.requests) == 3 and memory.recalls == 0
