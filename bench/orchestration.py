"""Orchestration benchmark: what the runtime itself costs per step, with a model that costs nothing.

A real team (planner, executor pool, reviewer, coordinator, the embedded memory actor and the
dead-letter actor) runs on a private local Ray (``ray.init(address="local")``); every role's
model is ``bench.scripted_model`` (zero latency, valid structured output, no sleeps). Each task
has a unique goal, so the planner recalls from memory, finds nothing and asks the (scripted)
model for a chain of ``--steps`` answer steps; each step goes executor -> reviewer (the model
approves) -> coordinator, then the final answer the same way. Memory is keyword-only
(``memory.embedding_model: null``): no Serve app, no embeddings. Memory grows over the run
(two episodes per executed step, two per task), as it would in a real deployment.

Run: ``.venv/bin/python bench/orchestration.py`` (or ``make bench``); ``--quick`` for a short
run; ``--journal on|off`` to force the task journal (default: the settings default);
``--lanes on|off`` to force direct lanes (off: every agent and memory hop is a Ray call). The full
run, as reported: ``.venv/bin/python bench/orchestration.py`` on an otherwise quiet machine.
The last line is one JSON object:

- ``step_overhead_p50_ms`` / ``step_overhead_p99_ms``: from ``--single`` tasks run one at a
  time, each task's wall time (``Team.run`` in the driver: submit -> plan -> every step ->
  final answer -> memory writes -> outcome back) minus its model time (zero: the scripted model
  answers at once), divided by the steps it executed including the final answer
  (``len(TaskCompleted.steps)``; ``--steps`` + 1). The planner hop, memory writes and the
  driver -> coordinator call are spread over the steps: this is everything the runtime adds per
  step, not one bus hop. Target: p50 <= 5 ms.
- ``step_cycle_trace_p50_ms``: per step, from the coordinator's ``step.assigned`` to the
  reviewer's ``review.verdict`` envelope timestamps in the trace (executor + reviewer hops and
  the executor's memory write; same clock, one machine), for comparison.
- ``trace_gaps_p50_ms_per_task``: where a task's time goes, from the same timestamps: the time
  between consecutive trace events, summed per ``"<type> -> <next type>"`` within a task, p50
  over the ``--single`` tasks (e.g. ``step.assigned -> step.result`` is the executor hop with
  its memory write).
- ``tasks_per_s_1`` / ``_10`` / ``_100``: closed loop with 1, 10 and 100 tasks in flight
  (threads each calling ``Team.run`` back to back); completed tasks / wall time. ``_1`` is the
  ``--single`` phase itself.
- ``peak_rss_mb``: the largest sum, over samples every 0.5 s, of the resident set size
  (``/proc/<pid>/statm``) of this driver and every process it descends to (the Ray it started:
  GCS, raylet, its helpers and all workers). Shared pages count once per process, so this
  over-states the unique memory; Linux only.
- context: ``steps_per_task`` (executed, with the final answer), ``plan_steps``, ``executors``,
  ``cpus`` (logical CPUs given to Ray), ``machine_cpus``, ``journal``, ``direct_lanes``, task
  counts per phase,
  ``load_avg_1m_start`` / ``_end``, and ``python_calibration_ms_start`` / ``_end``: a fixed
  pure-Python workload timed in the driver before and after (median of 5): how fast one core
  ran Python around the run, to compare runs on a shared machine.

Every task must complete with every step approved at the first attempt; anything else ends the
benchmark with an error (exit status 1), never with numbers for a different workload.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from agents import Team, TroupeSettings, start_team  # noqa: E402
from bench.scripted_model import model_id  # noqa: E402
from protocols import Budget, TaskCompleted, TaskSubmitted  # noqa: E402

CLIENT = "bench.scripted_model:scripted_client"
TASK_TIMEOUT_S = 300.0


def calibration_ms(repeats: int = 5) -> float:
    """Median time of a fixed pure-Python workload (dict and string work, like the runtime's),
    to tell how fast the machine is right now."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        table: dict[str, int] = {}
        for i in range(50_000):
            key = f"step-{i % 977}"
            table[key] = table.get(key, 0) + len(key)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of the samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- memory of the processes this benchmark started -------------------------------------------


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from ``/proc/<pid>/stat`` parent ids."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as file:
                stat = file.read()
        except OSError:
            continue  # exited while we looked
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler:
    """Samples the summed RSS of this process tree in a thread; keeps the peak."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.peak_bytes = 0
        self.peak_processes = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        pids = descendants(os.getpid())
        total = sum(rss_bytes(pid) for pid in pids)
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, len(pids)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# -- the team ---------------------------------------------------------------------------------


def bench_settings(args: argparse.Namespace, data: Path) -> TroupeSettings:
    """A team whose every role uses the scripted model, with its state under ``data``."""
    endpoint = {"client": CLIENT, "model": model_id(args.steps)}
    config: dict[str, Any] = {
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
            "actor_name": "troupe-memory-bench",
        },
        "bus": {
            "dead_letters_path": str(data / "bus" / "dead-letters.jsonl"),
            "actor_name": "troupe-dead-letters-bench",
        },
        "budget": {"max_steps": args.steps},
    }
    if args.lanes != "default":
        config["bus"]["config"] = {"direct_lanes": args.lanes == "on"}
    journal: dict[str, Any] = {"data_dir": str(data / "journal")}
    if args.journal != "default":
        journal["enabled"] = args.journal == "on"
    config["journal"] = journal
    return TroupeSettings.model_validate(config)


@contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A private Ray whose workers can import ``bench.scripted_model``; shut down afterwards."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        namespace=f"troupe-bench-{uuid.uuid4().hex[:8]}",
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


class Runner:
    """Submits tasks with unique goals and checks each came back as the workload intends."""

    def __init__(self, team: Team, budget: Budget, *, plan_steps: int) -> None:
        self._team = team
        self._budget = budget
        self._expected_steps = plan_steps + 1  # the plan's steps and the final answer
        self._count = 0
        self._lock = threading.Lock()

    def run_one(self) -> tuple[float, TaskCompleted]:
        """Runs one task; returns its wall time in seconds and its outcome."""
        with self._lock:
            self._count += 1
            number = self._count
        task = TaskSubmitted(
            task_id=f"bench-{number}",
            goal=f"Benchmark task {number}: carry out the scripted steps.",
            budget=self._budget,
        )
        started = time.perf_counter()
        outcome = self._team.run(task, timeout_s=TASK_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        self._check(outcome)
        assert isinstance(outcome, TaskCompleted)
        return elapsed, outcome

    def _check(self, outcome: object) -> None:
        if not isinstance(outcome, TaskCompleted):
            reason = getattr(outcome, "reason", repr(outcome))
            raise SystemExit(f"orchestration bench: a task did not complete: {reason}")
        revised = [r.step.id for r in outcome.steps if r.revisions or not r.approved]
        if len(outcome.steps) != self._expected_steps or revised:
            raise SystemExit(
                f"orchestration bench: task {outcome.task_id} ran {len(outcome.steps)} step(s) "
                f"(expected {self._expected_steps}), revised or unapproved: {revised}"
            )

    def closed_loop(self, concurrency: int, total: int) -> float:
        """``total`` tasks with ``concurrency`` in flight; returns completed tasks per second."""
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for _ in pool.map(lambda _: self.run_one(), range(total)):
                pass
        return total / (time.perf_counter() - started)


def step_cycles_ms(outcome: TaskCompleted) -> list[float]:
    """Per step, ``step.assigned`` -> ``review.verdict`` from the trace's envelope times."""
    assigned: dict[str, float] = {}
    cycles = []
    for event in outcome.trace:
        if event.step_id is None:
            continue
        if event.message_type == "step.assigned":
            assigned[event.step_id] = event.at.timestamp()
        elif event.message_type == "review.verdict" and event.step_id in assigned:
            cycles.append((event.at.timestamp() - assigned.pop(event.step_id)) * 1000)
    return cycles


def trace_gaps_ms(outcome: TaskCompleted) -> dict[str, float]:
    """Time between consecutive trace events, keyed ``"<type> -> <next type>"`` (summed per key)."""
    gaps: dict[str, float] = {}
    for before, after in itertools.pairwise(outcome.trace):
        key = f"{before.message_type} -> {after.message_type}"
        gaps[key] = gaps.get(key, 0.0) + (after.at - before.at).total_seconds() * 1000
    return gaps


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every phase on one team and returns the JSON fields."""
    context = {
        "load_avg_1m_start": os.getloadavg()[0],
        "python_calibration_ms_start": calibration_ms(),
    }
    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp, local_ray(args.cpus):
        settings = bench_settings(args, Path(tmp))
        with RssSampler() as rss:
            team = start_team(settings)
            try:
                runner = Runner(team, settings.budget, plan_steps=args.steps)
                for _ in range(args.warmup):
                    runner.run_one()
                overheads, cycles = [], []
                gaps: dict[str, list[float]] = {}
                started = time.perf_counter()
                for _ in range(args.single):
                    elapsed, outcome = runner.run_one()
                    model_s = 0.0  # the scripted model answers at once
                    overheads.append((elapsed - model_s) * 1000 / len(outcome.steps))
                    cycles.extend(step_cycles_ms(outcome))
                    for key, value in trace_gaps_ms(outcome).items():
                        gaps.setdefault(key, []).append(value)
                throughput = {1: args.single / (time.perf_counter() - started)}
                tasks = {1: args.single}
                for concurrency in args.concurrency:
                    if concurrency == 1:
                        continue
                    tasks[concurrency] = concurrency * args.rounds
                    throughput[concurrency] = runner.closed_loop(concurrency, tasks[concurrency])
            finally:
                team.stop()
    result: dict[str, Any] = {
        "step_overhead_p50_ms": round(statistics.median(overheads), 3),
        "step_overhead_p99_ms": round(percentile(overheads, 0.99), 3),
        "step_cycle_trace_p50_ms": round(statistics.median(cycles), 3) if cycles else None,
        "trace_gaps_p50_ms_per_task": {
            key: round(statistics.median(values), 3) for key, values in sorted(gaps.items())
        },
    }
    for concurrency, value in throughput.items():
        result[f"tasks_per_s_{concurrency}"] = round(value, 2)
    result.update(
        {
            "peak_rss_mb": round(rss.peak_bytes / 2**20, 1),
            "peak_rss_processes": rss.peak_processes,
            "steps_per_task": args.steps + 1,
            "plan_steps": args.steps,
            "executors": args.executors,
            "cpus": args.cpus,
            "machine_cpus": os.cpu_count(),
            "journal": settings.journal.enabled,
            "direct_lanes": settings.bus.config.direct_lanes,
            "warmup_tasks": args.warmup,
            "tasks_per_phase": {str(c): n for c, n in tasks.items()},
            "quick": args.quick,
            **context,
            "load_avg_1m_end": os.getloadavg()[0],
            "python_calibration_ms_end": calibration_ms(),
        }
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer tasks per phase)")
    parser.add_argument(
        "--journal",
        choices=["on", "off", "default"],
        default="default",
        help="force the task journal on or off (default: the settings default)",
    )
    parser.add_argument(
        "--lanes",
        choices=["on", "off", "default"],
        default="default",
        help="force the bus's and memory's direct lanes on or off (off: every hop a Ray call)",
    )
    parser.add_argument("--steps", type=int, default=5, help="plan steps per task (default 5)")
    parser.add_argument("--executors", type=int, default=2, help="executor actors (default 2)")
    parser.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs of the local Ray"
    )
    parser.add_argument("--single", type=int, help="tasks run one at a time (200; quick: 20)")
    parser.add_argument(
        "--rounds", type=int, help="tasks per concurrent phase = concurrency x rounds (3; quick: 1)"
    )
    parser.add_argument("--warmup", type=int, help="tasks run first, not measured (5; quick: 2)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: sorted({int(c) for c in text.split(",")}),
        default=[1, 10, 100],
        help="comma-separated tasks in flight (default 1,10,100)",
    )
    args = parser.parse_args(argv)
    if args.single is None:
        args.single = 20 if args.quick else 200
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 2 if args.quick else 5
    if args.single < 1 or args.rounds < 1 or args.steps < 1 or min(args.concurrency) < 1:
        parser.error("--single, --rounds, --steps and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
