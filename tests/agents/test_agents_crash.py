"""Crashes on real Ray: SIGKILL the coordinator, executors and reviewer while tasks run, and
restart the whole Ray cluster while a task waits for approval.

The agents run the scripted model and the ledger tool of ``crash_support`` (a side effect
written once per idempotency key). Every task must complete with the result of a fault-free
run; no committed step may start again (the journal's fold refuses that); the ledger may hold
one effect per step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray

from agents import main, start_team
from agents._journal import JournalConfig, SqliteJournal
from agents._journal_fold import fold
from agents._journal_models import StepStarted
from protocols import TaskCompleted, TaskSubmitted
from tests.agents.crash_support import crash_settings, read_jsonl

pytestmark = pytest.mark.ray

GOALS = [
    "record kilo lima mike",
    "record oscar papa",
    "record quebec romeo sierra tango",
    "record uniform victor",
    "record whiskey xray yankee",
    "record zulu alpha",
    "record bravo charlie delta",
    "record echo foxtrot",
]


def _pid(actor: Any) -> int:
    """The actor's process id, waiting while Ray restarts it after an earlier kill."""
    for _ in range(120):
        try:
            return int(ray.get(actor.pid.remote(), timeout=60))
        except ray.exceptions.RayActorError:
            time.sleep(0.5)
    raise AssertionError("the actor did not come back")


def _results(outcome: Any) -> tuple[str, list[tuple[str, str]]]:
    assert isinstance(outcome, TaskCompleted), outcome
    return outcome.final_answer, [(r.step.id, r.output) for r in outcome.steps]


def test_tasks_survive_sigkills_of_coordinator_executors_and_reviewer(
    ray_session: None, tmp_path: Path
) -> None:
    # Every agent in its own actor, so the reviewer can be killed apart from the coordinator
    # (colocated, it dies and comes back with the coordinator: the coordinator kills cover it).
    settings = crash_settings(tmp_path, "crash", colocated=())
    (tmp_path / "workspaces").mkdir(parents=True)
    team = start_team(settings)
    try:
        assert len(team.agents) == 4 and team.executors == team.agents[1:3]
        # A fault-free run first: the reference results.
        reference = {
            goal: _results(team.run(TaskSubmitted(task_id=f"ref-{i}", goal=goal)))
            for i, goal in enumerate(GOALS)
        }
        (tmp_path / "workspaces" / "delay").write_text("0.8")
        ids = [team.submit(TaskSubmitted(task_id=f"k-{i}", goal=g)) for i, g in enumerate(GOALS)]
        pool = ThreadPoolExecutor(len(ids))
        waits = [pool.submit(team.wait, task_id, 240) for task_id in ids]
        victims = {
            "coordinator": team.coordinator,
            "executor-0": team.agents[1],
            "executor-1": team.agents[2],
            "reviewer": team.agents[3],
        }
        rng = random.Random(20261121)
        kills: list[str] = []
        order = ["coordinator", "executor-0", "reviewer", "coordinator", "executor-1"]
        while len(kills) < 8:
            time.sleep(rng.uniform(0.3, 0.8))
            if all(w.done() for w in waits):
                break
            name = order[len(kills)] if len(kills) < len(order) else rng.choice(list(victims))
            os.kill(_pid(victims[name]), signal.SIGKILL)
            kills.append(name)
        outcomes = [w.result() for w in waits]
        pool.shutdown()
    finally:
        team.stop()

    assert "coordinator" in kills and "reviewer" in kills, (kills, [w.exception() for w in waits])
    assert len(kills) >= 3, f"the tasks finished before enough kills: {kills}"
    for task_id, goal, outcome in zip(ids, GOALS, outcomes, strict=True):
        assert _results(outcome) == reference[goal], task_id

    journal = SqliteJournal(JournalConfig(data_dir=tmp_path / "journal"))
    resent = 0
    for task_id in ids:
        entries = journal.entries(task_id)
        state = fold(entries)  # refuses a committed step that started again
        assert state.status == "completed"
        assert journal.audit(task_id).ok
        started = Counter(
            (e.payload.step_id, e.payload.attempt)
            for e in entries
            if isinstance(e.payload, StepStarted)
        )
        resent += sum(n - 1 for n in started.values())

    effects = read_jsonl(tmp_path / "workspaces" / "effects.jsonl")
    keys = [e["key"] for e in effects]
    assert len(keys) == len(set(keys)), "a side effect happened twice"
    per_task = Counter(k.rsplit(":", 2)[0] for k in keys)
    for task_id, goal in zip(ids, GOALS, strict=True):
        assert per_task[task_id] == len(goal.split()) - 1, (task_id, per_task[task_id])
    calls = read_jsonl(tmp_path / "workspaces" / "calls.jsonl")
    print(f"kills={kills} re-sent attempts={resent} tool invocations={len(calls)}")


def test_an_approval_survives_a_full_ray_restart(tmp_path: Path) -> None:
    """Ray #1 submits and stops while the task waits; the CLI approves with no Ray running;
    Ray #2 resumes the task, which runs the approved step exactly once."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    (tmp_path / "workspaces").mkdir(parents=True)

    def phase(name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tests.agents.crash_support", name, str(tmp_path)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "PENDING s2" in phase("submit")
    journal = SqliteJournal(JournalConfig(data_dir=tmp_path / "journal"))
    assert fold(journal.entries("t-approve")).status == "awaiting_approval"
    config = tmp_path / "troupe.yaml"
    config.write_text(f"journal:\n  data_dir: {tmp_path / 'journal'}\n")
    assert main(["approve", "t-approve", "s2", "--by", "tester", "--config", str(config)]) == 0
    assert "OUTCOME task.completed" in phase("resume")

    effects = read_jsonl(tmp_path / "workspaces" / "effects.jsonl")
    assert sorted(e["entry"] for e in effects) == ["kilo", "send"]
    sends = [c for c in read_jsonl(tmp_path / "workspaces" / "calls.jsonl") if ":s2:" in c["key"]]
    assert len(sends) == 1, "the approved step ran exactly once"
    assert fold(journal.entries("t-approve")).status == "completed"
