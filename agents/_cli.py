"""The ``troupe`` command: run a task end to end on a local (or joined) Ray cluster."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError

from agents._settings import TroupeSettings
from protocols import (
    Budget,
    ConfigurationError,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    TroupeError,
    describe_validation_error,
)


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
    run.add_argument("goal", help="what the team should do")
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
    settings = _settings(args)
    with _ray(settings), _models(settings) as base_url:
        names = ", ".join(model.name for model in settings.serve.models)
        print(f"troupe models: {base_url} ({names}); Ctrl-C stops", flush=True)
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
    task = _task(settings, goal=args.goal, max_steps=args.max_steps)
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


def run_task(settings: TroupeSettings, task: TaskSubmitted) -> TaskCompleted | TaskFailed:
    """Starts Ray, the model app and the team as needed, runs the task, stops what it started."""
    from agents._team import start_team

    with _ray(settings), _models(settings) as base_url:
        team = start_team(settings.with_local_endpoint(base_url))
        try:
            return team.run(task)
        finally:
            team.stop()


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


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigurationError(
                f"port {port} on {host} is in use, so the model API cannot listen there: pass "
                "--port with a free port or set serve.port in the settings file"
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
