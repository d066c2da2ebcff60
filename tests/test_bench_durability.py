"""The durability benchmark runs end to end on tiny sizes; its slow model pauses only on demand."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import ModelEndpoint, ModelRequest
from bench.scripted_model import model_id
from bench.slow_model import pause_marker, requested_pause, slow_client

ROOT = Path(__file__).resolve().parent.parent


def _step_request(goal: str) -> ModelRequest:
    content = f"Goal: {goal}\nStep: benchmark step 1"
    return ModelRequest(
        messages=({"role": "user", "content": content},), max_tokens=10, schema_name="step_answer"
    )


def test_the_pause_comes_from_the_goal_line_only() -> None:
    assert requested_pause(_step_request(f"Task 3 {pause_marker(2.5)}.")) == 2.5
    assert requested_pause(_step_request("Task 3, no marker")) == 0.0
    recalled = ModelRequest(
        messages=({"role": "user", "content": "Goal: plain\nFrom memory: [pause 9s]"},),
        max_tokens=10,
        schema_name="step_answer",
    )
    assert requested_pause(recalled) == 0.0


def test_the_slow_model_sleeps_only_for_marked_step_answers() -> None:
    client = slow_client(ModelEndpoint(client="bench.slow_model:slow_client", model=model_id(3)))
    started = time.perf_counter()
    reply = asyncio.run(client.complete(_step_request(f"Slow {pause_marker(0.3)}")))
    assert time.perf_counter() - started >= 0.3
    assert json.loads(reply.content) == {"answer": "done"}
    plan = ModelRequest(
        messages=({"role": "user", "content": f"Goal: Slow {pause_marker(30)}"},),
        max_tokens=10,
        schema_name="plan",
    )
    started = time.perf_counter()
    assert len(json.loads(asyncio.run(client.complete(plan)).content)["steps"]) == 3
    assert time.perf_counter() - started < 5


@pytest.mark.ray
def test_the_quick_benchmark_kills_the_coordinator_and_every_task_completes() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "bench" / "durability.py"), "--quick", "--single=3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for field in (
        "journal_write_p50_us",
        "normal_write_p50_us",
        "step_overhead_p50_ms_journal_off",
        "step_overhead_p50_ms_journal_full",
        "overhead_ratio_journal",
        "journal_step_cost_us",
        "coordinator_back_s",
    ):
        assert result[field] > 0, (field, result)
    assert result["journal_write_p99_us"] >= result["journal_write_p50_us"]
    # Every task was in flight at the kill, was resumed by the new coordinator, and completed.
    tasks = result["recovery_tasks"]
    assert tasks == 20
    assert result["tasks_in_flight_at_kill"] == result["steps_in_flight_at_kill"] == tasks
    assert result["tasks_resumed"] == result["tasks_completed_after_kill"] == tasks
    assert result["coordinator_back_s"] <= result["recovery_s"]
    assert result["first_completion_after_kill_s"] <= result["all_completed_after_kill_s"]
    # A step journals at least its start, result and commit; some share a transaction.
    assert result["journal_entries_per_step"] >= 3
    assert 1 <= result["journal_commits_per_step"] <= result["journal_entries_per_step"]
    per_task = result["journal_commits_per_task"]
    assert any("step.started" in kinds for kinds in per_task), per_task
    assert sum(per_task.values()) == pytest.approx(result["journal_commits_per_step"] * 6, abs=0.1)
    assert result["steps_per_task"] == 6
    assert result["overhead_tasks_per_mode"] == 3
