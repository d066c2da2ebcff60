"""The hiring workflow end to end: real Ray, Serve and llama.cpp with the bundled model, the
hiring tools loaded from config, a human approval given by the test."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from agents._reviewer import find_placeholders
from agents._team import Team, start_team
from examples.hiring.run import hiring_settings, hiring_workflow, outbox_path, slots_of
from examples.hiring.tools import read_outbox
from protocols import ApprovalDecided, ApprovalRequested, TaskCompleted


def _wait_for_approval(team: Team, task_id: str, timeout_s: float) -> ApprovalRequested:
    """The task's pending approval; fails at once when the task ended without asking."""
    import ray

    outcome_ref: Any = team.coordinator.wait.remote(task_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = team.pending_approvals(task_id)
        if pending:
            return pending[0]
        ready, _ = ray.wait([outcome_ref], timeout=1.0)
        if ready:
            raise AssertionError(f"the task ended before asking for approval: {ray.get(ready[0])}")
    raise AssertionError(f"no approval requested within {timeout_s} s")


@pytest.mark.ray
@pytest.mark.e2e
def test_the_hiring_workflow_runs_to_slots_after_a_human_approves(
    serve_base_url: str, tmp_path: Path
) -> None:
    # The session's model app runs llama.cpp with n_ctx=1024 (the runner's has 4096): keep
    # prompts (JSON-heavy in the final step) and answers small enough to fit together.
    overrides = {"agents": {"context_tokens": 340, "max_answer_chars": 360}}
    settings = hiring_settings(tmp_path, **overrides).with_local_endpoint(serve_base_url)
    task = hiring_workflow().task({}, task_id="hiring-e2e")
    team = start_team(settings)
    try:
        task_id = team.submit(task)
        request = _wait_for_approval(team, task_id, timeout_s=900)
        assert request.step.id == "send" and request.step.tool == "send_outreach"
        # Nothing is sent before the approval.
        assert not list((tmp_path / "workspaces").glob("*/outbox.jsonl"))
        team.decide(
            ApprovalDecided(task_id=task_id, step_id="send", decision="approve", decided_by="test")
        )
        outcome = team.wait(task_id, timeout_s=900)
    finally:
        team.stop()

    assert isinstance(outcome, TaskCompleted), getattr(outcome, "reason", outcome)
    records = {r.step.id: r for r in outcome.steps}
    picked = [records["pick_1"].output.split(",")[0], records["pick_2"].output.split(",")[0]]
    assert picked == ["Ana Lima", "Ben Okafor"]
    # One message per approved candidate, none twice, each naming its candidate, no placeholder.
    path = outbox_path(outcome)
    assert path is not None and path.parent.parent == (tmp_path / "workspaces").resolve()
    messages = read_outbox(path)
    assert [m["to"] for m in messages] == picked
    assert len({m["id"] for m in messages}) == len(messages)
    for message in messages:
        assert find_placeholders(message["text"]) == []
        first_name = message["to"].split()[0]
        assert re.search(rf"\b{first_name}\b", message["text"], re.IGNORECASE)
        assert 60 <= len(message["text"]) <= 600
    # Both answered with interest; the slots fit everyone's calendar.
    slots = slots_of(outcome)
    assert slots == json.loads((path.parent / "slots.json").read_text())
    assert [(s["candidate"], s["start"]) for s in slots["slots"]] == [
        ("Ana Lima", "2026-12-01T10:00"),
        ("Ana Lima", "2026-12-01T10:45"),
        ("Ben Okafor", "2026-12-02T14:00"),
    ]
