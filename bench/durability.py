"""Durability benchmark, part one: the journal alone (no Ray).

Run: ``.venv/bin/python bench/durability.py``. The last line is one JSON object:
``journal_write_p50_us``/``journal_write_p99_us`` (one ``append`` of a step-result envelope,
SQLite WAL, ``synchronous=FULL``: fsync per entry), the same for ``synchronous=NORMAL``
(``normal_write_*``), ``read_1000_ms`` (``entries`` of a 1,000-entry task) and
``fold_1000_ms`` (``fold`` of those entries). Recovery time and journal on/off overhead need
the coordinator wiring and come later (issue 7).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents._journal import JournalConfig, SqliteJournal
from agents._journal_fold import fold
from agents._journal_models import StateChanged, StepCommitted, StepStarted, idempotency_key
from protocols import Envelope, StepResult, TaskSubmitted, Topics

WRITES = 2000
FOLD_ENTRIES = 1000


def _quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q * 100) - 1]


def write_cost(data_dir: Path, synchronous: str) -> tuple[float, float]:
    """p50 and p99 microseconds of one append."""
    config = JournalConfig.model_validate({"data_dir": data_dir, "synchronous": synchronous})
    with SqliteJournal(config) as journal:
        task = TaskSubmitted(task_id="w", goal="benchmark")
        journal.append("w", "task.submitted", Envelope.wrap(task, sender="u", topic="t"))
        samples = []
        for i in range(WRITES):
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


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        root = Path(tmp)
        full_p50, full_p99 = write_cost(root / "full", "FULL")
        normal_p50, normal_p99 = write_cost(root / "normal", "NORMAL")
        read_ms, fold_ms, count = read_and_fold(root / "fold")
    print(
        json.dumps(
            {
                "journal_write_p50_us": round(full_p50, 1),
                "journal_write_p99_us": round(full_p99, 1),
                "normal_write_p50_us": round(normal_p50, 1),
                "normal_write_p99_us": round(normal_p99, 1),
                "fold_entries": count,
                "read_1000_ms": round(read_ms, 2),
                "fold_1000_ms": round(fold_ms, 2),
                "synchronous": "FULL",
            }
        )
    )


if __name__ == "__main__":
    main()
