"""End to end: real Ray, Serve and llama.cpp with the bundled model, and the openai client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents import TroupeSettings, start_team
from memory import RayMemory, RecallQuery
from protocols import TaskCompleted, TaskSubmitted

GOAL = "What is 17 * 23 + 4? Compute it and give the number."


@pytest.mark.ray
@pytest.mark.e2e
def test_a_task_completes_through_planner_executor_and_reviewer(
    serve_base_url: str, tmp_path: Path
) -> None:
    settings = TroupeSettings.model_validate(
        {
            "memory": {"data_dir": str(tmp_path), "actor_name": "troupe-memory-e2e"},
            "journal": {"data_dir": str(tmp_path / "journal")},
            "agents": {"executors": 2, "max_field_chars": 60, "max_answer_chars": 80},
            "budget": {"max_steps": 2},
        }
    ).with_local_endpoint(serve_base_url)
    team = start_team(settings)
    try:
        task = TaskSubmitted(task_id="e2e-1", goal=GOAL, budget=settings.budget)
        outcome = team.run(task, timeout_s=600)
        assert team.owned_memory is not None
        memory = RayMemory(team.owned_memory)
        episodes = asyncio.run(memory.count())
        recalled = asyncio.run(memory.recall(RecallQuery(text="multiply numbers", k=3)))
    finally:
        team.stop()

    assert isinstance(outcome, TaskCompleted), outcome
    # Every structured output parsed: no agent had to report unusable model output.
    errors = [e.summary for e in outcome.trace if e.message_type == "error.report"]
    assert errors == []
    # The trace holds every hop of every step, in order, and the final answer.
    types = [e.message_type for e in outcome.trace]
    assert types[:3] == ["task.submitted", "plan.requested", "plan.proposed"]
    for record in outcome.steps:
        hops = [e.message_type for e in outcome.trace if e.step_id == record.step.id]
        assert hops[:4] == ["step.assigned", "step.result", "review.requested", "review.verdict"]
        assert hops.count("step.assigned") == record.revisions + 1
    assert outcome.steps[-1].step.id == "final"
    assert outcome.final_answer == outcome.steps[-1].output
    assert outcome.final_answer.strip()
    # Executors wrote their actions and results, the coordinator its plan and summary.
    assert episodes >= 2 * len(outcome.steps) + 2
    # ...embedded through the Serve app's embeddings model, so recall can be hybrid.
    assert recalled and all(s.episode.embedding_model == "minilm-l6-v2" for s in recalled)
