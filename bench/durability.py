"""Durability benchmark (issue 7): what the task journal costs, and how fast a killed coordinator
comes back with every task it was running.

Three phases, one run: the raw journal (no Ray), then real teams on a private local Ray
(``ray.init(address="local")``) whose every role uses ``bench.slow_model`` (the zero-latency
scripted model of ``bench/orchestration.py``; a goal marked ``[pause Ns]`` makes each step answer
take N seconds, which is how tasks stay in flight). Memory is keyword-only, as in
``bench/orchestration.py``.

Run: ``.venv/bin/python bench/durability.py`` (or ``make bench``); ``--quick`` for a short run
(fewer writes and tasks, 20 tasks in flight instead of 100, one executor per team, journal off and
FULL only). The full run, as reported:
``.venv/bin/python bench/durability.py`` on an otherwise quiet machine. The last line is one JSON
object:

- Raw journal (``SqliteJournal`` alone, in a temporary directory on the repository's disk):
  ``journal_write_p50_us`` / ``journal_write_p99_us``: one ``append`` of a step-result envelope,
  SQLite WAL, ``synchronous=FULL`` (an fsync per commit); ``normal_write_p50_us`` / ``_p99_us``:
  the same with ``synchronous=NORMAL``; ``read_1000_ms`` / ``fold_1000_ms``: ``entries`` and
  ``fold`` of a 1,000-entry task.
- Per step, as the coordinator journals it: ``journal_entries_per_step`` and
  ``journal_commits_per_step`` (entries and transactions of the overhead phase's FULL-journal
  tasks, from that journal afterwards, divided by their executed steps; the coordinator writes
  some entries together with ``append_many``, one transaction and one fsync, so the entries of a
  commit share their timestamp), ``journal_step_cost_us`` = commits per step x
  ``journal_write_p50_us`` (the fsync'd writes one step waits for, estimated from the raw cost;
  ``journal_added_ms_per_step`` below is the measured counterpart), and
  ``journal_commits_per_task``: a task's commits by the kinds written together, which shows
  where the fsyncs go.
- Overhead, journal on vs off: three teams (journal off, ``FULL``, ``NORMAL``), each with its own
  memory, run ``--single`` zero-latency tasks one at a time, interleaved (one task per team in
  turn, the order rotating) so that load from elsewhere hits every mode alike. A task's per-step
  overhead is as in ``bench/orchestration.py``: wall time of ``Team.run`` / executed steps
  (``--steps`` + the final answer). ``step_overhead_p50_ms_journal_off`` / ``_full`` /
  ``_normal`` are the p50s, ``overhead_ratio_journal`` = full / off (target: <= 1.20),
  ``overhead_ratio_journal_normal`` = normal / off, and ``journal_added_ms_per_step`` = full - off.
- Recovery, on the FULL team after the overhead phase: ``--tasks`` tasks (100) are submitted
  with a ``[pause --pause s]`` goal and a waiter thread each (``Team.wait``, which keeps asking
  while Ray restarts the coordinator). Once the coordinator runs all of them and the executors
  hold a step of every one (``tasks_in_flight_at_kill``, ``steps_in_flight_at_kill``), its
  process gets SIGKILL. ``recovery_s`` is the time from the kill until the restarted
  coordinator answers ``stats()`` with every unfinished task resumed (``active`` + ``finished``
  covers them) and caught up with its journal (``caught_up == active``: each resumed task has
  re-executed past everything the journal held and acts live again). Target: <= 10 s.
  ``coordinator_back_s``: kill -> the first answer of the new instance (Ray's restart plus
  ``recover()``). ``first_completion_after_kill_s`` / ``all_completed_after_kill_s``: kill -> the
  first / last waiter returning (these include the remaining paused steps).
  ``tasks_completed_after_kill`` counts tasks whose outcome is ``task.completed``;
  ``tasks_resumed`` is what the new coordinator's ``recover()`` resumed;
  ``executor_duplicates_after_kill``: re-sent steps the executors answered without running them
  again (same message id: joined the running attempt or got its remembered reply).
- context: ``steps_per_task``, ``executors``, ``cpus``, ``machine_cpus``, ``load_avg_1m`` at the
  start and end, task counts, ``pause_s``, ``quick``.

Every overhead task must complete with every step approved at the first attempt, or the
benchmark ends with an error (exit status 1). After the kill, the JSON is printed first and the
exit status is 1 if any task did not complete: the figures then describe a failed recovery.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from ray.exceptions import GetTimeoutError, RayActorError  # noqa: E402

from agents import Team, TroupeSettings, start_team  # noqa: E402
from agents._journal import JournalConfig, SqliteJournal  # noqa: E402
from agents._journal_fold import fold  # noqa: E402
from agents._journal_models import (  # noqa: E402
    StateChanged,
    StepCommitted,
    StepStarted,
    idempotency_key,
)
from bench.orchestration import Runner, local_ray, percentile  # noqa: E402
from bench.scripted_model import model_id  # noqa: E402
from bench.slow_model import pause_marker  # noqa: E402
from protocols import (  # noqa: E402
    Budget,
    Envelope,
    StepResult,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    Topics,
)

CLIENT = "bench.slow_model:slow_client"
FOLD_ENTRIES = 1000
MODES = ("off", "FULL", "NORMAL")
WAIT_TIMEOUT_S = 300.0
RECOVERY_TIMEOUT_S = 120.0
IN_FLIGHT_TIMEOUT_S = 120.0


def _quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q * 100) - 1]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- the raw journal --------------------------------------------------------------------------


def write_cost(data_dir: Path, synchronous: str, *, writes: int) -> tuple[float, float]:
    """p50 and p99 microseconds of one append."""
    config = JournalConfig.model_validate({"data_dir": data_dir, "synchronous": synchronous})
    with SqliteJournal(config) as journal:
        task = TaskSubmitted(task_id="w", goal="benchmark")
        journal.append("w", "task.submitted", Envelope.wrap(task, sender="u", topic="t"))
        samples = []
        for i in range(writes):
            message = StepResult(task_id="w", step_id="s1", output=f"result {i} " * 20, ok=True)
            envelope = Envelope.wrap(message, sender="executor", topic=Topics.EXECUTOR)
            start = time.perf_counter()
            journal.append("w", "step.result", envelope)
            samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples), _quantile(samples, 0.99)


def read_and_fold(data_dir: Path) -> tuple[float, float, int]:
    """Milliseconds to read and to fold a task of FOLD_ENTRIES entries."""
    config = JournalConfig(data_dir=data_dir, synchronous="NORMAL")
    with SqliteJournal(config) as journal:
        task = TaskSubmitted(task_id="f", goal="benchmark")
        journal.append("f", "task.submitted", Envelope.wrap(task, sender="u", topic="t"))
        journal.append("f", "state.changed", StateChanged(to="planning"))
        journal.append("f", "state.changed", StateChanged(to="running"))
        step = 0
        while journal.last("f").seq + 3 <= FOLD_ENTRIES:  # type: ignore[union-attr]
            step_id = f"s{step}"
            key = idempotency_key("f", step_id, 1)
            journal.append(
                "f", "step.started", StepStarted(step_id=step_id, attempt=1, idempotency_key=key)
            )
            message = StepResult(task_id="f", step_id=step_id, output="x" * 200, ok=True)
            journal.append("f", "step.result", Envelope.wrap(message, sender="e", topic="t"))
            commit = StepCommitted(step_id=step_id, attempt=1, output="x" * 200, approved=True)
            journal.append("f", "step.committed", commit)
            step += 1
        while journal.last("f").seq < FOLD_ENTRIES:  # type: ignore[union-attr]
            message = StepResult(task_id="f", step_id="late", output="late", ok=True)
            journal.append("f", "step.result", Envelope.wrap(message, sender="e", topic="t"))
        start = time.perf_counter()
        entries = journal.entries("f")
        read_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        state = fold(entries)
        fold_ms = (time.perf_counter() - start) * 1e3
        assert len(state.committed) == step
    return read_ms, fold_ms, len(entries)


def raw_journal(root: Path, *, writes: int) -> dict[str, Any]:
    """The raw journal's fields."""
    full_p50, full_p99 = write_cost(root / "full", "FULL", writes=writes)
    normal_p50, normal_p99 = write_cost(root / "normal", "NORMAL", writes=writes)
    read_ms, fold_ms, count = read_and_fold(root / "fold")
    return {
        "journal_write_p50_us": round(full_p50, 1),
        "journal_write_p99_us": round(full_p99, 1),
        "normal_write_p50_us": round(normal_p50, 1),
        "normal_write_p99_us": round(normal_p99, 1),
        "journal_writes": writes,
        "fold_entries": count,
        "read_1000_ms": round(read_ms, 2),
        "fold_1000_ms": round(fold_ms, 2),
    }


def journal_per_step(data_dir: Path, *, prefix: str, write_us: float) -> dict[str, Any]:
    """How the coordinator journaled the completed tasks whose id has ``prefix``: entries and
    commits per executed step, their cost at ``write_us`` per commit, and the commits per task
    by the kinds each one wrote (``"step.result+step.committed"``)."""
    entries = steps = tasks = 0
    shapes: Counter[str] = Counter()
    with SqliteJournal(JournalConfig(data_dir=data_dir)) as journal:
        for info in journal.tasks():
            if not info.task_id.startswith(prefix):
                continue
            written = journal.entries(info.task_id)
            ends = [
                e.payload.payload
                for e in written
                if isinstance(e.payload, Envelope) and isinstance(e.payload.payload, TaskCompleted)
            ]
            if not ends:
                continue
            tasks += 1
            entries += len(written)
            steps += len(ends[-1].steps)
            commits: dict[datetime, list[str]] = {}
            for entry in written:  # one append_many, one timestamp
                commits.setdefault(entry.at, []).append(entry.kind)
            shapes.update("+".join(kinds) for kinds in commits.values())
    if not steps:
        raise SystemExit("durability bench: no completed task in the FULL journal")
    per_step = shapes.total() / steps
    return {
        "journal_entries_per_step": round(entries / steps, 2),
        "journal_commits_per_step": round(per_step, 2),
        "journal_step_cost_us": round(per_step * write_us, 1),
        "journal_commits_per_task": {
            shape: round(count / tasks, 2) for shape, count in shapes.most_common()
        },
    }


# -- the teams --------------------------------------------------------------------------------


def team_settings(args: argparse.Namespace, data: Path, *, mode: str) -> TroupeSettings:
    """A team on the slow scripted model, journal ``mode`` (off, FULL, NORMAL), under ``data``."""
    endpoint = {"client": CLIENT, "model": model_id(args.steps)}
    journal: dict[str, Any] = {"data_dir": str(data / "journal"), "enabled": mode != "off"}
    if mode != "off":
        journal["synchronous"] = mode
    return TroupeSettings.model_validate(
        {
            "ray": {"num_cpus": args.cpus},
            "agents": {
                "planner": endpoint,
                "executor": endpoint,
                "reviewer": endpoint,
                "executors": args.executors,
            },
            "memory": {
                "data_dir": str(data / "memory"),
                "embedding_model": None,
                "actor_name": f"troupe-memory-durability-{mode.lower()}",
            },
            "bus": {
                "dead_letters_path": str(data / "bus" / "dead-letters.jsonl"),
                "actor_name": f"troupe-dead-letters-durability-{mode.lower()}",
            },
            "journal": journal,
            "budget": {"max_steps": args.steps},
        }
    )


def overhead(runners: dict[str, Runner], *, single: int, warmup: int) -> dict[str, list[float]]:
    """Per-step overhead (ms) of ``single`` tasks per mode, one task per mode in turn."""
    modes = list(runners)
    for _ in range(warmup):
        for mode in modes:
            runners[mode].run_one()
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(single):
        for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
            elapsed, outcome = runners[mode].run_one()
            samples[mode].append(elapsed * 1000 / len(outcome.steps))
    return samples


def overhead_fields(samples: dict[str, list[float]]) -> dict[str, Any]:
    """p50/p99 per mode and the on/off ratios."""
    p50 = {mode: statistics.median(values) for mode, values in samples.items()}
    fields: dict[str, Any] = {}
    for mode, values in samples.items():
        fields[f"step_overhead_p50_ms_journal_{mode.lower()}"] = round(p50[mode], 3)
        fields[f"step_overhead_p99_ms_journal_{mode.lower()}"] = round(percentile(values, 0.99), 3)
    fields["overhead_ratio_journal"] = round(p50["FULL"] / p50["off"], 3)
    fields["journal_added_ms_per_step"] = round(p50["FULL"] - p50["off"], 3)
    if "NORMAL" in p50:
        fields["overhead_ratio_journal_normal"] = round(p50["NORMAL"] / p50["off"], 3)
    return fields


# -- recovery ---------------------------------------------------------------------------------


def _ask(method: Any, *args: Any, timeout_s: float | None = None) -> Any:
    """One actor call, waited for (Ray's stubs do not type actor handles)."""
    return ray.get(method.remote(*args), timeout=timeout_s)


def _executor_stats(team: Team) -> tuple[int, int]:
    """Steps the executors are running now, and redeliveries they answered without running."""
    stats: list[Any] = ray.get([executor.stats.remote() for executor in team.executors])
    return sum(s.in_flight for s in stats), sum(s.duplicates for s in stats)


def _wait_until(what: str, check: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"durability bench: {what} did not happen within {timeout_s:g}s")
        time.sleep(0.02)


def recovery(team: Team, budget: Budget, *, tasks: int, pause: float) -> dict[str, Any]:
    """Kills the coordinator with ``tasks`` tasks in flight; times its recovery (see above)."""
    marker = pause_marker(pause)
    ids = [
        team.submit(
            TaskSubmitted(
                task_id=f"recover-{i}",
                goal=f"Recovery task {i}: carry out the scripted steps {marker}.",
                budget=budget,
            )
        )
        for i in range(tasks)
    ]
    finished_at: dict[str, float] = {}

    def wait(task_id: str) -> TaskCompleted | TaskFailed:
        outcome = team.wait(task_id, WAIT_TIMEOUT_S)
        finished_at[task_id] = time.perf_counter()
        return outcome

    pool = ThreadPoolExecutor(max_workers=tasks, thread_name_prefix="wait")
    waits: list[Future[TaskCompleted | TaskFailed]] = [pool.submit(wait, i) for i in ids]
    try:
        seen: dict[str, Any] = {}

        def all_in_flight() -> bool:
            seen["stats"] = _ask(team.coordinator.stats)
            seen["steps"], seen["duplicates"] = _executor_stats(team)
            if finished_at:
                raise SystemExit("durability bench: a task finished before the kill; raise --pause")
            return bool(seen["stats"]["active"] == tasks and seen["steps"] == tasks)

        _wait_until("all tasks in flight", all_in_flight, timeout_s=IN_FLIGHT_TIMEOUT_S)
        unfinished = seen["stats"]["active"]
        pid = int(_ask(team.coordinator.pid))
        killed = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        back, recovered = _time_recovery(team, unfinished=unfinished, killed=killed)
        new_pid = int(_ask(team.coordinator.pid))
        resumed = _ask(team.coordinator.recover)
        outcomes = [w.result() for w in waits]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if new_pid == pid:
        raise SystemExit("durability bench: the coordinator kept its process: the kill missed")
    _, duplicates = _executor_stats(team)
    done = sorted(finished_at.values())
    return {
        "recovery_s": round(recovered - killed, 3),
        "coordinator_back_s": round(back - killed, 3),
        "first_completion_after_kill_s": round(done[0] - killed, 3),
        "all_completed_after_kill_s": round(done[-1] - killed, 3),
        "tasks_in_flight_at_kill": unfinished,
        "steps_in_flight_at_kill": seen["steps"],
        "tasks_resumed": len(resumed),
        "tasks_completed_after_kill": sum(isinstance(o, TaskCompleted) for o in outcomes),
        "executor_duplicates_after_kill": duplicates - seen["duplicates"],
        "recovery_tasks": tasks,
        "pause_s": pause,
    }


def _time_recovery(team: Team, *, unfinished: int, killed: float) -> tuple[float, float]:
    """When the new coordinator first answered, and when it had resumed and caught up."""
    back: float | None = None
    deadline = killed + RECOVERY_TIMEOUT_S
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise SystemExit("durability bench: the coordinator did not recover in time")
        try:
            stats = _ask(team.coordinator.stats, timeout_s=left)
        except RayActorError:
            time.sleep(0.02)  # the call reached the dying instance; Ray is restarting it
            continue
        except GetTimeoutError:
            continue
        now = time.perf_counter()
        back = now if back is None else back
        resumed = stats["active"] + stats["finished"] >= unfinished
        if resumed and stats["caught_up"] == stats["active"]:
            return back, now
        time.sleep(0.02)


# -- the run ----------------------------------------------------------------------------------


class _Phases:
    """Seconds each phase took, for the context fields."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the three phases and returns the JSON fields."""
    result: dict[str, Any] = {"load_avg_1m_start": _load()}
    phases = _Phases()
    # Every journal on the repository's disk, where ``journal.data_dir`` is by default.
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".durability-") as tmp:
        result.update(raw_journal(Path(tmp) / "raw", writes=args.writes))
        phases.mark("raw_journal")
        with local_ray(args.cpus):
            phases.mark("ray")
            root = Path(tmp)
            settings = {m: team_settings(args, root / m.lower(), mode=m) for m in args.modes}
            teams: dict[str, Team] = {}
            try:
                for mode in args.modes:
                    teams[mode] = start_team(settings[mode])
                phases.mark("teams")
                runners = {
                    mode: Runner(team, settings[mode].budget, plan_steps=args.steps)
                    for mode, team in teams.items()
                }
                samples = overhead(runners, single=args.single, warmup=args.warmup)
                phases.mark("overhead")
                for mode in args.modes:
                    if mode != "FULL":
                        teams.pop(mode).stop()
                full, budget = teams["FULL"], settings["FULL"].budget
                outcome = recovery(full, budget, tasks=args.tasks, pause=args.pause)
                phases.mark("recovery")
            finally:
                for team in teams.values():
                    team.stop()
        shape = journal_per_step(
            settings["FULL"].journal.data_dir,
            prefix="bench-",
            write_us=result["journal_write_p50_us"],
        )
    result.update(overhead_fields(samples))
    result.update(shape)
    result.update(outcome)
    result.update(
        {
            "steps_per_task": args.steps + 1,
            "executors": args.executors,
            "cpus": args.cpus,
            "machine_cpus": os.cpu_count(),
            "overhead_tasks_per_mode": args.single,
            "warmup_tasks_per_mode": args.warmup,
            "synchronous": "FULL",
            "load_avg_1m_end": _load(),
            "phase_s": phases.seconds,
            "quick": args.quick,
        }
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer writes and tasks)")
    parser.add_argument("--writes", type=int, help="raw appends per mode (2000; quick: 300)")
    parser.add_argument("--single", type=int, help="overhead tasks per mode (150; quick: 8)")
    parser.add_argument("--warmup", type=int, help="unmeasured tasks per mode (3; quick: 1)")
    parser.add_argument("--tasks", type=int, help="tasks in flight at the kill (100; quick: 20)")
    parser.add_argument("--pause", type=float, help="seconds per step answer (5; quick: 1)")
    parser.add_argument(
        "--modes",
        type=lambda text: [m for m in MODES if m in text.split(",")],
        help="journal modes of the overhead phase, among off,FULL,NORMAL (default: all; quick: "
        "off,FULL); off and FULL always run",
    )
    parser.add_argument("--steps", type=int, default=5, help="plan steps per task (default 5)")
    parser.add_argument("--executors", type=int, help="executor actors per team (2; quick: 1)")
    parser.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs of the local Ray"
    )
    args = parser.parse_args(argv)
    defaults = {
        "writes": (2000, 300),
        "single": (150, 8),
        "warmup": (3, 1),
        "tasks": (100, 20),
        "executors": (2, 1),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.pause is None:
        args.pause = 1.0 if args.quick else 5.0
    if args.modes is None:
        args.modes = ["off", "FULL"] if args.quick else list(MODES)
    args.modes = [m for m in MODES if m in {"off", "FULL", *args.modes}]
    if min(args.writes, args.single, args.tasks, args.steps, args.executors) < 1:
        parser.error("--writes, --single, --tasks, --steps and --executors must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.writes < 100 or args.pause <= 0:
        parser.error("--writes must be at least 100 (for a p99) and --pause positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args)
    print(json.dumps(result))
    if result["tasks_completed_after_kill"] != result["recovery_tasks"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
