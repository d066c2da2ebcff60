"""Support for the crash tests: a deterministic model and a side-effect ledger tool, both
loaded by agents inside Ray workers (``ModelEndpoint.client`` and ``tools.custom``).

- ``scripted_client``: a zero-latency model. The planner gets one ``ledger`` step per word of
  the goal after ``record`` (the last step depends on all the others); answers and reviews are
  fixed. It answers from the request alone, so a restarted actor answers the same.
- ``ledger_tools``: a ``ledger`` tool whose side effect is a line in ``<workspace root>/
  effects.jsonl``, written once per idempotency key; every invocation (re-sends included) is
  also logged to ``calls.jsonl``. It takes as many seconds as ``<workspace root>/delay``
  says, so tasks are in flight long enough to be hit by a kill. ``send`` is the same tool
  flagged high-impact (its steps wait for approval).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from agents import ModelEndpoint, ModelReply, ModelRequest, TroupeSettings
from agents._model import ModelToolCall
from agents._toolkit import ToolArgs, ToolContext, ToolResult, TypedTool
from protocols import AgentError


def _goal_words(text: str) -> list[str]:
    found = re.search(r"Goal:\s*record ([a-z ]+)", text) or re.search(r"record ([a-z ]+)", text)
    return found.group(1).split() if found else ["nothing"]


class CrashModel:
    """Answers by the structured output asked for; see the module docstring."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        text = "\n".join(str(m.get("content", "")) for m in request.messages)
        if request.schema_name == "plan":
            words = _goal_words(text)[:5]
            steps = [
                {
                    "description": f"record {w}",
                    "tool": "send" if w == "send" else "ledger",
                    "input": w,
                    "depends_on": [],
                }
                for w in words
            ]
            if len(steps) > 1:
                steps[-1]["depends_on"] = list(range(1, len(steps)))
            content = json.dumps({"steps": steps})
        elif request.schema_name == "step_answer":
            content = json.dumps({"answer": "every entry is recorded"})
        elif request.schema_name == "step_tools":
            answer = json.dumps({"answer": "every entry is recorded"})
            call = ModelToolCall(id="call_0", name="answer", arguments=answer)
            return ModelReply(
                content="", finish_reason="tool_calls", tool_calls=(call,), model="crash"
            )
        elif request.schema_name == "review":
            content = json.dumps({"decision": "approve", "feedback": ""})
        else:
            raise AgentError(
                f"the crash-test model has no reply for {request.schema_name!r}",
                code="unexpected_model_call",
                retryable=False,
            )
        return ModelReply(content=content, prompt_tokens=3, completion_tokens=2, model="crash")


def scripted_client(endpoint: ModelEndpoint) -> CrashModel:
    """``ModelEndpoint.client`` factory."""
    return CrashModel()


class LedgerArgs(ToolArgs):
    """Arguments of ``ledger``."""

    entry: str = Field(min_length=1, max_length=200, description="What to record.")


class LedgerTool(TypedTool[LedgerArgs]):
    """Records an entry once per idempotency key (a side effect that must not repeat)."""

    name = "ledger"
    description = "record an entry in the ledger (input: the entry)"
    args_model = LedgerArgs
    timeout_s = 30.0

    async def run(self, args: LedgerArgs, ctx: ToolContext) -> ToolResult:
        root = ctx.workspace.parent
        delay_file = root / "delay"
        delay = float(delay_file.read_text()) if delay_file.exists() else 0.0
        _append(root / "calls.jsonl", {"key": ctx.idempotency_key, "pid": os.getpid()})
        if delay:
            await asyncio.sleep(delay)
        output = f"recorded {args.entry}"
        with _locked(root / "effects.lock"):
            effects = root / "effects.jsonl"
            seen = {
                json.loads(line)["key"]
                for line in (effects.read_text().splitlines() if effects.exists() else [])
            }
            if ctx.idempotency_key not in seen:
                _append(effects, {"key": ctx.idempotency_key, "entry": args.entry})
        return self.result(output)


class SendTool(LedgerTool):
    """Like ``ledger``, but high-impact: its steps always wait for a human's approval."""

    name = "send"
    description = "send the entry to the outside world (input: the entry)"
    impact = "high"


def ledger_tools() -> list[TypedTool[Any]]:
    """``tools.custom`` factory."""
    return [LedgerTool(), SendTool()]


def crash_settings(
    root: Path, name: str, *, colocated: tuple[str, ...] | None = None
) -> TroupeSettings:
    """A team on the scripted model and the ledger, with everything under ``root``;
    ``colocated`` overrides ``agents.colocated`` (None: the default)."""
    model = {"client": "tests.agents.crash_support:scripted_client", "model": "crash"}
    placement = {} if colocated is None else {"colocated": colocated}
    return TroupeSettings.model_validate(
        {
            "agents": {
                **placement,
                "planner": model,
                "executor": model,
                "reviewer": model,
                "executors": 2,
                "tools": {"custom": ["tests.agents.crash_support:ledger_tools"]},
                "workspace_dir": str(root / "workspaces"),
                "request_timeout_s": 60,
            },
            "memory": {
                "embedding_model": None,
                "actor_name": f"{name}-memory",
                "data_dir": str(root / "memory"),
            },
            "bus": {"actor_name": f"{name}-letters", "dead_letters_path": str(root / "dl.jsonl")},
            "journal": {"data_dir": str(root / "journal"), "synchronous": "NORMAL"},
            "budget": {"max_steps": 6},
        }
    )


def _phase(phase: str, root: Path) -> int:
    """One life of a Ray cluster for the restart test (run as ``python -m``)."""
    import ray

    from agents import start_team
    from protocols import TaskCompleted, TaskSubmitted

    repo = str(Path(__file__).resolve().parents[2])
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": repo}},
        log_to_driver=False,
    )
    team = start_team(crash_settings(root, "restart"))
    try:
        if phase == "submit":
            team.submit(TaskSubmitted(task_id="t-approve", goal="record kilo send"))
            for _ in range(600):
                if team.pending_approvals("t-approve"):
                    print("PENDING", team.pending_approvals("t-approve")[0].step.id, flush=True)
                    return 0
                time.sleep(0.1)
            return 3
        outcome = team.wait("t-approve", timeout_s=120)
        print("OUTCOME", outcome.type, flush=True)
        return 0 if isinstance(outcome, TaskCompleted) else 4
    finally:
        team.stop()
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(_phase(sys.argv[1], Path(sys.argv[2])))


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / (path.name + ".lock")), path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


class _locked:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a")

    def __enter__(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
