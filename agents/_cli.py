"""The ``troupe`` command: run a task end to end on a local (or joined) Ray cluster."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from agents._settings import TroupeSettings
from agents._structured import clip
from protocols import (
    ApprovalDecided,
    Budget,
    CancelTask,
    ConfigurationError,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskSubmitted,
    TroupeError,
    describe_validation_error,
)

if TYPE_CHECKING:
    from agents._journal import SqliteJournal
    from agents._team import Team


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``troupe`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except TroupeError as exc:
        print(f"troupe: error: {exc.message}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="troupe", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run one task end to end and print its steps and answer")
    run.add_argument("goal", nargs="?", help="what the team should do")
    run.add_argument("--workflow", type=Path, help="run a declared workflow (YAML) instead")
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a workflow input (repeatable)",
    )
    run.add_argument("--config", type=Path, help="settings file (YAML, JSON or TOML)")
    run.add_argument("--port", type=int, help="HTTP port of the model API (default 8000)")
    run.add_argument("--max-steps", type=int, help="largest plan allowed")
    run.add_argument("--json", action="store_true", help="print the outcome as JSON")
    run.add_argument("--trace", action="store_true", help="also print every hop of the trace")
    run.set_defaults(func=_cmd_run)
    protocol = sub.add_parser("protocol", help="the message protocol")
    protocol_sub = protocol.add_subparsers(required=True, metavar="WHAT")
    schema = protocol_sub.add_parser("schema", help="print the JSON Schema of every message")
    schema.set_defaults(func=_cmd_protocol_schema)
    up = sub.add_parser("up", help="serve the OpenAI-compatible model API until Ctrl-C")
    up.add_argument("--config", type=Path, help="settings file (YAML, JSON or TOML)")
    up.add_argument("--port", type=int, help="HTTP port of the model API (default 8000)")
    up.set_defaults(func=_cmd_up)

    def journal_command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", type=Path, help="settings file (YAML, JSON or TOML)")
        command.set_defaults(func=func, port=None)
        return command

    tasks = journal_command("tasks", "list the journal's tasks and their states", _cmd_tasks)
    tasks.add_argument("--status", help="only tasks in this state")
    status = journal_command("status", "one task: its state, steps and approvals", _cmd_status)
    status.add_argument("task", help="task id")
    journal_command("approvals", "steps waiting for a human's decision", _cmd_approvals)
    approve = journal_command("approve", "approve, reject or edit a waiting step", _cmd_approve)
    approve.add_argument("task", help="task id")
    approve.add_argument("step", help="step id waiting for approval")
    choice = approve.add_mutually_exclusive_group()
    choice.add_argument("--reject", action="store_true", help="reject it (the planner sees why)")
    choice.add_argument("--edit", metavar="INPUT", help="approve it with this input instead")
    approve.add_argument("--reason", default="", help="why (recorded, shown to the planner)")
    approve.add_argument("--by", default=getpass.getuser(), help="who decides (default: you)")
    cancel = journal_command("cancel", "stop a running task", _cmd_cancel)
    cancel.add_argument("task", help="task id")
    cancel.add_argument("--reason", default="", help="why (recorded)")
    audit = journal_command("audit", "verify a task's hash-chained journal", _cmd_audit)
    audit.add_argument("task", help="task id")
    replay = journal_command(
        "replay", "re-run a finished task from its journal with no model calls", _cmd_replay
    )
    replay.add_argument("task", help="task id")
    compact = journal_command(
        "compact", "prune finished tasks per the retention policy", _cmd_compact
    )
    compact.add_argument("--keep-last", type=int, help="override journal.retention_keep_last")
    compact.add_argument("--max-age-days", type=float, help="override retention_max_age_days")

    resume = sub.add_parser("resume", help="resume unfinished tasks from the journal")
    resume.add_argument("--config", type=Path, help="settings file (YAML, JSON or TOML)")
    resume.add_argument("--port", type=int, help="HTTP port of the model API (default 8000)")
    resume.set_defaults(func=_cmd_resume)
    fork = sub.add_parser("fork", help="start a new task from a step of a finished one")
    fork.add_argument("task", help="task id to fork")
    fork.add_argument("--from-step", required=True, help="step id or 1-based position")
    fork.add_argument("--goal", help="a changed goal (default: the original's)")
    fork.add_argument("--config", type=Path, help="settings (a changed model or prompts)")
    fork.add_argument("--port", type=int, help="HTTP port of the model API (default 8000)")
    fork.set_defaults(func=_cmd_fork)
    return parser


def _settings(args: argparse.Namespace) -> TroupeSettings:
    """The settings file (if any) with the command line's overrides."""
    settings = TroupeSettings.load(args.config)
    if args.port is not None:
        settings = settings.model_copy(
            update={"serve": settings.serve.model_copy(update={"port": args.port})}
        )
    return settings


def _cmd_up(args: argparse.Namespace) -> int:
    """Deploys the model app (starting or joining Ray), prints its URL, serves until Ctrl-C.

    Only this app is deleted on the way out; Ray is shut down only if this command started it.
    """
    from serve import proxy_url  # deferred as in _models: most commands never load Serve

    settings = _settings(args)
    with _ray(settings), _models(settings) as base_url:
        names = ", ".join(model.name for model in settings.serve.models)
        print(f"troupe models: {base_url} ({names}); Ctrl-C stops", flush=True)
        proxy = proxy_url(settings.serve)
        if base_url != proxy:
            print(f"troupe models: also through the Serve proxy at {proxy}")
        with contextlib.suppress(KeyboardInterrupt):
            wait_for_interrupt()
    print("troupe models: stopped", flush=True)
    return 0


def wait_for_interrupt() -> None:
    """Blocks until Ctrl-C or SIGTERM (both end as ``KeyboardInterrupt``)."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
    threading.Event().wait()


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.workflow is not None:
        if args.goal:
            raise ConfigurationError("give a goal or --workflow, not both")
        task = _workflow_task(settings, args.workflow, args.input)
    elif args.goal:
        if args.input:
            raise ConfigurationError("--input is for --workflow; a goal takes no inputs")
        task = _task(settings, goal=args.goal, max_steps=args.max_steps)
    else:
        raise ConfigurationError("give a goal to run, or --workflow FILE")
    started = time.monotonic()
    outcome = run_task(settings, task)
    elapsed = time.monotonic() - started
    if args.json:
        print(outcome.model_dump_json(indent=2))
    else:
        print(render_outcome(outcome, elapsed_s=elapsed, trace=args.trace))
    return 0 if isinstance(outcome, TaskCompleted) else 1


def _cmd_protocol_schema(args: argparse.Namespace) -> int:
    """Prints what ``protocols/schema/v1.json`` snapshots (the schema test compares them)."""
    from protocols import message_schemas

    print(json.dumps(message_schemas(), indent=1, sort_keys=True))
    return 0


def _task(settings: TroupeSettings, *, goal: str, max_steps: int | None) -> TaskSubmitted:
    """The task to run; bad input is refused before anything starts."""
    budget = settings.budget.model_dump()
    if max_steps is not None:
        budget["max_steps"] = max_steps
    try:
        return TaskSubmitted(
            task_id=f"t-{uuid.uuid4().hex[:12]}",
            goal=goal,
            budget=Budget.model_validate(budget),
        )
    except ValidationError as exc:
        raise ConfigurationError(
            f"cannot run this task: {describe_validation_error(exc)}"
        ) from None


def _workflow_task(settings: TroupeSettings, path: Path, given: list[str]) -> TaskSubmitted:
    from agents._workflow import load_workflow

    inputs: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--input {item!r} must look like NAME=VALUE")
        inputs[name] = value
    return load_workflow(path).task(inputs)


def run_task(settings: TroupeSettings, task: TaskSubmitted) -> TaskCompleted | TaskFailed:
    """Starts Ray, the model app and the team as needed, runs the task, stops what it started.

    While the task waits for a human, says how to decide (``troupe approve`` from another
    terminal); Ctrl-C leaves the task in the journal for ``troupe resume``.
    """
    with _team(settings) as team:
        team.submit(task)
        return _wait_telling_approvals(team, task.task_id)


@contextlib.contextmanager
def _team(settings: TroupeSettings) -> Iterator[Team]:
    from agents._team import start_team

    with _ray(settings), _models(settings) as base_url:
        team = start_team(settings.with_local_endpoint(base_url))
        try:
            yield team
        finally:
            team.stop()


def _wait_telling_approvals(team: Team, task_id: str) -> TaskCompleted | TaskFailed:
    import ray

    told: set[str] = set()
    while True:
        try:
            return team.wait(task_id, timeout_s=1.0)
        except ray.exceptions.GetTimeoutError:
            pass
        for request in team.pending_approvals(task_id):
            if request.step.id not in told:
                told.add(request.step.id)
                print(
                    f"task {task_id} waits for approval of step {request.step.id} "
                    f"[{request.step.tool}] {request.step.description!r} (input: "
                    f"{request.step.input!r}): {request.reason}\n"
                    f"  decide with: troupe approve {task_id} {request.step.id} "
                    "[--reject | --edit INPUT] [--reason TEXT]",
                    flush=True,
                )


def _cmd_resume(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _team(settings) as team:
        resumed = team.recover()
        if not resumed:
            print("troupe: no unfinished tasks in the journal")
            return 0
        code = 0
        for task_id in resumed:
            started = time.monotonic()
            outcome = _wait_telling_approvals(team, task_id)
            print(render_outcome(outcome, elapsed_s=time.monotonic() - started, trace=False))
            code = code or (0 if isinstance(outcome, TaskCompleted) else 1)
        return code


def _cmd_fork(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _team(settings) as team:
        started = time.monotonic()
        new_id = team.fork(args.task, args.from_step, goal=args.goal)
        print(f"troupe: forked {args.task} from step {args.from_step} as {new_id}", flush=True)
        outcome = _wait_telling_approvals(team, new_id)
    print(render_outcome(outcome, elapsed_s=time.monotonic() - started, trace=False))
    return 0 if isinstance(outcome, TaskCompleted) else 1


# -- journal commands: they read and write the journal file, no Ray needed -------------------


def _journal(args: argparse.Namespace) -> SqliteJournal:
    from agents._journal import JournalConfig, SqliteJournal

    config = TroupeSettings.load(args.config).journal
    if not (config.data_dir / "journal.sqlite3").exists():
        raise ConfigurationError(
            f"no journal in {config.data_dir.resolve()}: run a task first, or pass --config "
            "with the journal.data_dir the team uses"
        )
    return SqliteJournal(JournalConfig(data_dir=config.data_dir, synchronous=config.synchronous))


def _cmd_tasks(args: argparse.Namespace) -> int:
    journal = _journal(args)
    tasks = journal.tasks(args.status) if args.status else journal.tasks()
    for info in tasks:
        print(
            f"{info.task_id:<40} {info.status:<18} {info.entries:>5} entries  "
            f"updated {info.updated_at:%Y-%m-%d %H:%M:%S}"
        )
    if not tasks:
        print("troupe: no tasks")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from agents._history import History

    journal = _journal(args)
    entries = journal.entries(args.task)
    if not entries:
        raise TaskError(f"no task {args.task!r} in the journal", code="unknown_task")
    history = History.from_entries(entries)
    state = history.state
    assert state is not None
    print(
        f"task {args.task}: {state.status} ({len(entries)} entries, plan round {state.plan_round})"
    )
    print(f"goal: {history.task.goal}")
    for step_id, done in state.committed.items():
        print(f"  committed {step_id} (attempt {done.attempt}): {clip(done.output, 200)}")
    for step_id, flight in state.in_flight.items():
        print(f"  in flight {step_id} (attempt {flight.attempt}, key {flight.idempotency_key})")
    for step_id, gates in history.gates.items():
        gate = gates[-1]
        if gate.decision is None:
            print(f"  awaiting approval: {step_id} ({gate.requests[-1].reason})")
        else:
            d = gate.decision
            print(f"  approval of {step_id}: {d.decision} by {d.decided_by} at {d.decided_at}")
    if history.outcome is not None:
        outcome = history.outcome
        text = outcome.final_answer if isinstance(outcome, TaskCompleted) else outcome.reason
        print(f"outcome: {outcome.type}: {clip(text, 500)}")
    return 0


def _cmd_approvals(args: argparse.Namespace) -> int:
    from agents._coordinator import pending_in_journal

    pending = pending_in_journal(_journal(args))
    for request in pending:
        deadline = f", deadline {request.deadline:%Y-%m-%d %H:%M:%S}" if request.deadline else ""
        print(
            f"{request.task_id} {request.step.id} [{request.step.tool}] "
            f"{request.step.description!r} input={request.step.input!r}: {request.reason}"
            f"{deadline}"
        )
    if not pending:
        print("troupe: nothing waits for approval")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    from agents._coordinator import record_decision

    decision: Literal["approve", "reject", "edit"] = (
        "reject" if args.reject else "edit" if args.edit is not None else "approve"
    )
    try:
        decided = ApprovalDecided(
            task_id=args.task,
            step_id=args.step,
            decision=decision,
            decided_by=args.by,
            reason=args.reason,
            edited_input=args.edit,
        )
    except ValidationError as exc:
        raise ConfigurationError(
            f"cannot record this decision: {describe_validation_error(exc)}"
        ) from None
    record_decision(_journal(args), decided)
    print(f"troupe: {decision} of {args.task}/{args.step} by {args.by} recorded")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from agents._coordinator import record_cancel

    request = CancelTask(task_id=args.task, reason=args.reason, requested_by=getpass.getuser())
    record_cancel(_journal(args), request)
    print(f"troupe: cancel of {args.task} recorded; its coordinator stops it within a second")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    report = _journal(args).audit(args.task)
    if report.entries_checked == 0:
        raise TaskError(f"no task {args.task!r} in the journal", code="unknown_task")
    if report.ok:
        checked = report.entries_checked
        print(f"task {args.task}: journal intact ({checked} entries, head {report.head_hash})")
        return 0
    print(f"task {args.task}: journal DAMAGED ({len(report.problems)} problem(s)):")
    for problem in report.problems:
        print(f"  seq {problem.seq}: {problem.problem}: {problem.detail}")
    return 1


def _cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from agents._coordinator import Coordinator
    from agents._history import History
    from protocols import InProcessBus

    settings = TroupeSettings.load(args.config)
    journal = _journal(args)
    entries = journal.entries(args.task)
    if not entries:
        raise TaskError(f"no task {args.task!r} in the journal", code="unknown_task")
    recorded = History.from_entries(entries).outcome
    if recorded is None:
        raise TaskError(
            f"task {args.task} has not finished; only finished tasks replay", code="not_finished"
        )
    coordinator = Coordinator(InProcessBus(), None, journal=journal, approvals=settings.approvals)
    started = time.monotonic()
    replayed = asyncio.run(coordinator.replay(args.task))
    print(render_outcome(replayed, elapsed_s=time.monotonic() - started, trace=False))
    same = _same_result(recorded, replayed)
    print(
        f"replay: {'same result as recorded' if same else 'DIFFERENT from the recorded result'}; "
        "0 model calls, 0 tool calls (every reply came from the journal)"
    )
    return 0 if same else 1


def _same_result(a: TaskCompleted | TaskFailed, b: TaskCompleted | TaskFailed) -> bool:
    if type(a) is not type(b):
        return False
    if (
        isinstance(a, TaskCompleted)
        and isinstance(b, TaskCompleted)
        and a.final_answer != b.final_answer
    ):
        return False
    return [(r.step.id, r.output) for r in a.steps] == [(r.step.id, r.output) for r in b.steps]


def _cmd_compact(args: argparse.Namespace) -> int:
    from agents._journal_models import RetentionPolicy

    config = TroupeSettings.load(args.config).journal
    policy = RetentionPolicy(
        keep_last=args.keep_last if args.keep_last is not None else config.retention_keep_last,
        max_age_days=(
            args.max_age_days if args.max_age_days is not None else config.retention_max_age_days
        ),
    )
    report = _journal(args).compact(policy)
    print(
        f"troupe: removed {len(report.tasks_removed)} finished task(s), "
        f"{report.entries_removed} entries, {report.blobs_removed} blobs"
    )
    return 0


@contextlib.contextmanager
def _ray(settings: TroupeSettings) -> Iterator[None]:
    """Starts a private local Ray (or joins ``ray.address``); shuts down only one it started."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address=settings.ray.address,
        num_cpus=settings.ray.num_cpus if settings.ray.address == "local" else None,
        namespace=settings.ray.namespace,
        include_dashboard=settings.ray.include_dashboard,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _models(settings: TroupeSettings) -> Iterator[str]:
    """Deploys troupe's model app on Serve and deletes it afterwards."""
    from serve import deploy, shutdown

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # deploy chatter is not the result
    _check_port_free(settings.serve.host, settings.serve.port)
    if settings.serve.direct_port:  # 0 is "any free port", None is "none"
        _check_port_free(settings.serve.host, settings.serve.direct_port, setting="direct_port")
    try:
        base_url = deploy(settings.serve)
    except RuntimeError as exc:  # Serve reports a replica that failed to start this way
        raise ConfigurationError(
            f"the model app did not start: {exc}; the replica's log under "
            "/tmp/ray/session_latest/logs/serve/ says why"
        ) from None
    try:
        yield base_url
    finally:
        shutdown(settings.serve)


def _check_port_free(host: str, port: int, *, setting: str = "port") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            fix = "pass --port with a free port or set" if setting == "port" else "set"
            raise ConfigurationError(
                f"port {port} on {host} is in use, so the model API cannot listen there: "
                f"{fix} serve.{setting} in the settings file"
            ) from None


def render_outcome(outcome: TaskCompleted | TaskFailed, *, elapsed_s: float, trace: bool) -> str:
    """The outcome as a person reads it: each step, its review, and the answer."""
    status = "completed" if isinstance(outcome, TaskCompleted) else "FAILED"
    lines = [
        f"troupe task {outcome.task_id}: {status} in {elapsed_s:.1f} s",
        f"goal: {outcome.goal}",
    ]
    plans = [e.summary for e in outcome.trace if e.message_type == "plan.proposed"]
    if plans:
        replans = f" (after {len(plans) - 1} replan(s))" if len(plans) > 1 else ""
        lines.append(f"plan: {plans[-1].split(':', 1)[0]}{replans}")
    lines += ["", "steps:"]
    for record in outcome.steps:
        step = record.step
        review = "approved" if record.approved else f"NOT approved ({record.decision})"
        revised = f", {record.revisions} revision(s)" if record.revisions else ""
        lines.append(f"  {step.id} [{step.tool}] {step.description}")
        if step.input:
            lines.append(f"      input:  {step.input}")
        lines.append(f"      output: {record.output}")
        lines.append(f"      review: {review}{revised} {record.feedback}".rstrip())
    if not outcome.steps:
        lines.append("  (none)")
    lines.append("")
    if isinstance(outcome, TaskCompleted):
        lines.append(f"final answer: {outcome.final_answer}")
    else:
        lines.append(f"failed: {outcome.reason}")
    lines.append(f"trace: {len(outcome.trace)} events")
    if trace:
        for event in outcome.trace:
            where = f" {event.step_id}" if event.step_id else ""
            lines.append(
                f"  #{event.seq:<3} {event.sender:>12} -> {event.topic:<16} "
                f"{event.message_type}{where}: {event.summary}"
            )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main", "render_outcome", "run_task"]
