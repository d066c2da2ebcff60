"""Runs the hiring workflow on a local Ray with the bundled model, gated by your approval.

    python -m examples.hiring            # asks before sending
    python -m examples.hiring --approve  # approves the send step itself

It starts a private local Ray and the model app (SmolLM2-135M and MiniLM), starts a team whose
executors know the hiring tools, submits the workflow, shows the step that waits for approval,
approves (or rejects) it, and prints the outbox and the proposed interview slots.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents._settings import TroupeSettings
from agents._workflow import Workflow, load_workflow
from examples.hiring.tools import OUTBOX_FILE, TOOL_NAMES, read_outbox
from protocols import ApprovalDecided, ApprovalRequested, TaskCompleted, TaskFailed, TroupeError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKFLOW = HERE / "workflow.yaml"
CUSTOM_TOOLS = "examples.hiring.tools:hiring_tools"


def hiring_workflow() -> Workflow:
    """The committed workflow, checked against the hiring tools' names."""
    workflow = load_workflow(WORKFLOW)
    workflow.check_tools(TOOL_NAMES)
    return workflow


def hiring_settings(state_dir: Path, **overrides: Any) -> TroupeSettings:
    """Settings for the example: the hiring tools on, state under ``state_dir``.

    Answers may be long enough for an e-mail; the memory, journal, bus and workspaces live in
    ``state_dir`` so runs do not mix with other troupe state.
    """
    state_dir = state_dir.resolve()
    data: dict[str, Any] = {
        "agents": {
            "tools": {"custom": [CUSTOM_TOOLS]},
            "max_answer_chars": 480,
            # A pipeline needs no memories of earlier runs; recall would also embed each step's
            # input, and the send step's (two e-mails) is longer than MiniLM takes.
            "recall_episodes": 0,
            "workspace_dir": str(state_dir / "workspaces"),
        },
        "memory": {"data_dir": str(state_dir / "memory"), "actor_name": "troupe-memory-hiring"},
        "journal": {"data_dir": str(state_dir / "journal")},
        "bus": {
            "dead_letters_path": str(state_dir / "bus" / "dead-letters.jsonl"),
            "actor_name": "troupe-dead-letters-hiring",
        },
    }
    for key, value in overrides.items():
        data.setdefault(key, {}).update(value)
    return TroupeSettings.model_validate(data)


def wait_for_approval(team: Any, task_id: str, *, timeout_s: float) -> ApprovalRequested:
    """Polls until the task's step waits for a person; an error when the task ended first."""
    import ray

    outcome_ref = team.coordinator.wait.remote(task_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending: list[ApprovalRequested] = team.pending_approvals(task_id)
        if pending:
            return pending[0]
        ready, _ = ray.wait([outcome_ref], timeout=1.0)
        if ready:
            outcome = ray.get(ready[0])
            reason = outcome.reason if isinstance(outcome, TaskFailed) else "it completed"
            raise TroupeError(f"task {task_id} ended before asking for approval: {reason}")
    raise TroupeError(f"no approval was requested within {timeout_s:.0f} s")


def outbox_path(outcome: TaskCompleted | TaskFailed) -> Path | None:
    """Where the send step wrote, from its output."""
    for record in outcome.steps:
        if record.step.id == "send":
            return Path(json.loads(record.output)["outbox"])
    return None


def slots_of(outcome: TaskCompleted | TaskFailed) -> dict[str, Any]:
    """The proposed slots, from the last step's output."""
    for record in outcome.steps:
        if record.step.id == "slots":
            result: dict[str, Any] = json.loads(record.output)
            return result
    return {"slots": [], "unscheduled": []}


def describe(request: ApprovalRequested) -> str:
    """The waiting step, as a person reads it."""
    step = request.step
    return "\n".join(
        [
            f"approval needed: step {step.id} [{step.tool}] {step.description}",
            f"  why: {request.reason}",
            "  input:",
            *(f"    {line}" for line in step.input.splitlines()),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.hiring``."""
    parser = argparse.ArgumentParser(prog="python -m examples.hiring", description=__doc__)
    parser.add_argument("--approve", action="store_true", help="approve the send step")
    parser.add_argument("--state-dir", type=Path, default=Path(".troupe/hiring"))
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the model API")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per phase")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except TroupeError as exc:
        print(f"hiring: error: {exc.message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import ray

    from agents._team import start_team
    from serve import deploy, shutdown

    workflow = hiring_workflow()
    settings = hiring_settings(args.state_dir, serve={"port": args.port})
    # Ray workers import the tools by module path: give them the repository root.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(
        address="local",
        namespace=settings.ray.namespace,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        base_url = deploy(settings.serve)
        team = start_team(settings.with_local_endpoint(base_url))
        try:
            return _drive(team, workflow, approve=args.approve, timeout_s=args.timeout)
        finally:
            team.stop()
            shutdown(settings.serve)
    finally:
        ray.shutdown()


def _drive(team: Any, workflow: Workflow, *, approve: bool, timeout_s: float) -> int:
    task = workflow.task({})
    task_id = team.submit(task)
    print(f"submitted {task.workflow} as task {task_id}; drafting (this takes a few minutes)")
    request = wait_for_approval(team, task_id, timeout_s=timeout_s)
    print(describe(request))
    if not approve:
        answer = input("send these messages? [y/N] ").strip().lower()
        approve = answer in {"y", "yes"}
    team.decide(
        ApprovalDecided(
            task_id=task_id,
            step_id=request.step.id,
            decision="approve" if approve else "reject",
            decided_by=os.environ.get("USER", "operator"),
            reason="" if approve else "not approved at the prompt",
        )
    )
    outcome = team.wait(task_id, timeout_s=timeout_s)
    for record in outcome.steps:
        if record.step.id.startswith("draft"):
            print(f"\n{record.step.id} ({record.revisions} revision(s)):\n{record.output}")
    if isinstance(outcome, TaskFailed):
        print(f"\ntask failed: {outcome.reason}")
        return 1
    path = outbox_path(outcome)
    print(f"\noutbox ({path}):")
    for message in read_outbox(path) if path else []:
        print(f"  to {message['to']} <{message['email']}>: {message['text'][:80]}…")
    print("\nproposed interview slots:")
    found = slots_of(outcome)
    for slot in found["slots"]:
        print(f"  {slot['candidate']}: {slot['start']} - {slot['end'][-5:]}")
    for name in found["unscheduled"]:
        print(f"  {name}: no common free time")
    return 0


__all__ = ["OUTBOX_FILE", "hiring_settings", "hiring_workflow", "main"]
