"""The SQLite journal: round trip, sequences under threads, durability, blobs, audit, retention."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents._journal import JournalConfig, SqliteJournal
from agents._journal_fold import fold
from agents._journal_models import (
    IllegalTransitionError,
    JournalError,
    RetentionPolicy,
    StateChanged,
    StepStarted,
    idempotency_key,
    parse_idempotency_key,
)
from protocols import Envelope, StepResult, TaskSubmitted, Topics

ROOT = Path(__file__).resolve().parents[2]


def submitted(task_id: str, goal: str = "add two numbers") -> Envelope:
    task = TaskSubmitted(task_id=task_id, goal=goal)
    return Envelope.wrap(task, sender="user", topic=Topics.TASK_EVENTS, provenance="user")


def result(task_id: str, output: str = "42", step_id: str = "s1") -> Envelope:
    message = StepResult(task_id=task_id, step_id=step_id, output=output, ok=True)
    return Envelope.wrap(message, sender="executor", topic=Topics.EXECUTOR)


def open_journal(path: Path, **kwargs: object) -> SqliteJournal:
    config = JournalConfig.model_validate({"data_dir": path, "synchronous": "NORMAL", **kwargs})
    return SqliteJournal(config)


def finish(journal: SqliteJournal, task_id: str, to: str = "completed") -> None:
    for state in ("planning", "running", to):
        journal.append(task_id, "state.changed", StateChanged.model_validate({"to": state}))


@pytest.fixture
def journal(tmp_path: Path):
    with open_journal(tmp_path) as j:
        yield j


def raw(journal: SqliteJournal) -> sqlite3.Connection:
    """A second connection, as someone editing the file by hand would have."""
    return sqlite3.connect(journal.path, isolation_level=None)


# -- append and read --------------------------------------------------------------------------


def test_append_read_round_trip(journal: SqliteJournal) -> None:
    first = journal.append("t1", "task.submitted", submitted("t1"))
    started = StepStarted(step_id="s1", attempt=1, idempotency_key=idempotency_key("t1", "s1", 1))
    journal.append("t1", "state.changed", StateChanged(to="planning", reason="go"))
    journal.append("t1", "step.started", started)
    journal.append("t1", "step.result", result("t1"))

    entries = journal.entries("t1")
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [e.kind for e in entries] == [
        "task.submitted",
        "state.changed",
        "step.started",
        "step.result",
    ]
    assert entries[0] == first
    assert entries[2].payload == started
    assert entries[1].previous_hash == entries[0].hash
    assert journal.last("t1") == entries[-1]
    assert journal.last("nope") is None
    assert [e.seq for e in journal.entries("t1", after_seq=2)] == [3, 4]
    [info] = journal.tasks()
    assert (info.task_id, info.status, info.entries) == ("t1", "planning", 4)


def test_kind_must_match_payload_and_task(journal: SqliteJournal) -> None:
    with pytest.raises(JournalError, match="first entry must be task.submitted"):
        journal.append("t1", "step.result", result("t1"))
    journal.append("t1", "task.submitted", submitted("t1"))
    with pytest.raises(JournalError, match="does not match"):
        journal.append("t1", "step.committed", result("t1"))
    with pytest.raises(JournalError, match="envelope of task t2"):
        journal.append("t1", "step.result", result("t2"))
    with pytest.raises(JournalError, match="already submitted"):
        journal.append("t1", "task.submitted", submitted("t1"))
    assert [e.seq for e in journal.entries("t1")] == [1]


def test_append_refuses_illegal_transition(journal: SqliteJournal) -> None:
    journal.append("t1", "task.submitted", submitted("t1"))
    with pytest.raises(IllegalTransitionError, match="submitted -> completed") as caught:
        journal.append("t1", "state.changed", StateChanged(to="completed"))
    assert (caught.value.source, caught.value.target) == ("submitted", "completed")
    assert journal.last("t1").seq == 1  # type: ignore[union-attr]


def test_tasks_filtered_by_status(journal: SqliteJournal) -> None:
    for task_id in ("a", "b", "c"):
        journal.append(task_id, "task.submitted", submitted(task_id))
    finish(journal, "b")
    finish(journal, "c", "failed")
    assert [t.task_id for t in journal.tasks("submitted")] == ["a"]
    assert [t.task_id for t in journal.tasks("completed")] == ["b"]
    [failed] = journal.tasks("failed")
    assert failed.finished_at is not None
    assert len(journal.tasks()) == 3


def test_sequences_gap_free_under_threads(journal: SqliteJournal) -> None:
    tasks = ["x", "y"]
    for task_id in tasks:
        journal.append(task_id, "task.submitted", submitted(task_id))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                task_id = tasks[(n + i) % 2]
                journal.append(task_id, "step.result", result(task_id, f"{n}-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for task_id in tasks:
        assert [e.seq for e in journal.entries(task_id)] == list(range(1, 162))
        assert journal.audit(task_id).ok
    outputs = {
        e.payload.payload.output  # type: ignore[union-attr]
        for task_id in tasks
        for e in journal.entries(task_id)[1:]
    }
    assert len(outputs) == 8 * 40


def test_durable_across_reopen(tmp_path: Path) -> None:
    with open_journal(tmp_path, synchronous="FULL") as j:
        j.append("t1", "task.submitted", submitted("t1"))
        j.append("t1", "state.changed", StateChanged(to="planning"))
        before = j.entries("t1")
    with open_journal(tmp_path) as j:
        assert j.entries("t1") == before
        assert j.append("t1", "state.changed", StateChanged(to="running")).seq == 3
        assert j.audit("t1").ok


def test_entry_survives_a_killed_process(tmp_path: Path) -> None:
    """The writer exits without closing anything (as a SIGKILLed actor would) right after append."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from agents._journal import JournalConfig, SqliteJournal\n"
        "from protocols import Envelope, TaskSubmitted, Topics\n"
        "j = SqliteJournal(JournalConfig(data_dir=Path(sys.argv[1])))\n"
        "t = TaskSubmitted(task_id='k1', goal='survive')\n"
        "e = Envelope.wrap(t, sender='user', topic=Topics.TASK_EVENTS)\n"
        "j.append('k1', 'task.submitted', e)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=ROOT)
    with open_journal(tmp_path) as j:
        [entry] = j.entries("k1")
        assert entry.payload.payload.goal == "survive"  # type: ignore[union-attr]
        assert j.audit("k1").ok


# -- blobs --------------------------------------------------------------------------------------


def test_large_payloads_stored_once(tmp_path: Path) -> None:
    with open_journal(tmp_path, blob_threshold_bytes=1000) as j:
        big = result("t1", "x" * 5000)
        j.append("t1", "task.submitted", submitted("t1"))
        a = j.append("t1", "step.result", big)
        b = j.append("t1", "step.result", big)  # the same envelope redelivered
        small = j.append("t1", "step.result", result("t1", "tiny"))
        assert a.blob is not None and a.blob == b.blob and small.blob is None
        entries = j.entries("t1")
        assert entries[1].payload == big == entries[2].payload
        db = raw(j)
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM entries WHERE payload IS NULL").fetchone() == (2,)
        db.close()
        assert j.audit("t1").ok


# -- audit --------------------------------------------------------------------------------------


def five_entries(journal: SqliteJournal) -> None:
    journal.append("t1", "task.submitted", submitted("t1"))
    for output in ("a", "b", "c", "d"):
        journal.append("t1", "step.result", result("t1", output))


def test_audit_passes_untouched(journal: SqliteJournal) -> None:
    five_entries(journal)
    report = journal.audit("t1")
    assert report.ok and report.entries_checked == 5
    assert report.head_hash == journal.last("t1").hash  # type: ignore[union-attr]


def test_audit_detects_edited_payload(journal: SqliteJournal) -> None:
    five_entries(journal)
    with raw(journal) as db:
        db.execute(
            'UPDATE entries SET payload = replace(payload, \'"output":"c"\', \'"output":"C"\')'
            " WHERE seq = 4"
        )
    report = journal.audit("t1")
    assert report.first_bad_seq == 4
    assert [(p.seq, p.problem) for p in report.problems] == [(4, "payload_mismatch")]


def test_audit_detects_edited_blob(tmp_path: Path) -> None:
    with open_journal(tmp_path, blob_threshold_bytes=100) as j:
        j.append("t1", "task.submitted", submitted("t1"))
        j.append("t1", "step.result", result("t1", "y" * 500))
        with raw(j) as db:
            db.execute("UPDATE blobs SET data = replace(data, 'yyy', 'zzz')")
        assert [(p.seq, p.problem) for p in j.audit("t1").problems] == [(2, "payload_mismatch")]


def test_audit_detects_rehashed_payload_edit(journal: SqliteJournal) -> None:
    """Whoever fixes the payload hash too still breaks the entry's chain hash."""
    five_entries(journal)
    with raw(journal) as db:
        db.execute("UPDATE entries SET payload = '{}', payload_sha = 'ab' WHERE seq = 2")
    problems = {(p.seq, p.problem) for p in journal.audit("t1").problems}
    assert (2, "hash_mismatch") in problems


def test_audit_detects_deleted_middle_row(journal: SqliteJournal) -> None:
    five_entries(journal)
    with raw(journal) as db:
        db.execute("DELETE FROM entries WHERE seq = 3")
    report = journal.audit("t1")
    assert report.first_bad_seq == 3
    assert {(p.seq, p.problem) for p in report.problems} == {(3, "missing"), (4, "chain_broken")}


def test_audit_detects_deleted_last_row(journal: SqliteJournal) -> None:
    five_entries(journal)
    with raw(journal) as db:
        db.execute("DELETE FROM entries WHERE seq = 5")
    assert [(p.seq, p.problem) for p in journal.audit("t1").problems] == [(5, "head_mismatch")]


def test_audit_detects_swapped_rows(journal: SqliteJournal) -> None:
    five_entries(journal)
    with raw(journal) as db:
        db.execute("UPDATE entries SET seq = -1 WHERE seq = 2")
        db.execute("UPDATE entries SET seq = 2 WHERE seq = 3")
        db.execute("UPDATE entries SET seq = 3 WHERE seq = -1")
    report = journal.audit("t1")
    assert report.first_bad_seq == 2
    problems = {(p.seq, p.problem) for p in report.problems}
    assert {(2, "hash_mismatch"), (3, "hash_mismatch"), (2, "chain_broken")} <= problems


def test_audit_detects_swapped_contents(journal: SqliteJournal) -> None:
    """Swapping what two rows say (kind, payload, hashes) but keeping their seq numbers."""
    five_entries(journal)
    cols = "kind, at, payload, blob_sha, payload_sha, previous_hash, hash"
    with raw(journal) as db:
        two = db.execute(f"SELECT {cols} FROM entries WHERE seq = 2").fetchone()
        three = db.execute(f"SELECT {cols} FROM entries WHERE seq = 3").fetchone()
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        db.execute(f"UPDATE entries SET {sets} WHERE seq = 2", three)
        db.execute(f"UPDATE entries SET {sets} WHERE seq = 3", two)
    assert journal.audit("t1").first_bad_seq == 2


# -- retention ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_compaction_policy(tmp_path: Path) -> None:
    clock = FakeClock()
    config = JournalConfig(data_dir=tmp_path, synchronous="NORMAL", blob_threshold_bytes=1000)
    with SqliteJournal(config, clock=clock) as j:
        shared = result("old1", "s" * 2000)
        for day, task_id in enumerate(["old1", "old2", "mid", "new", "running"]):
            clock.now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day * 10)
            j.append(task_id, "task.submitted", submitted(task_id))
            j.append(task_id, "step.result", result(task_id, f"{task_id} " * 400))
            if task_id == "old1":
                j.append(task_id, "step.result", shared)
            if task_id != "running":
                finish(j, task_id)
        clock.now += timedelta(days=365)  # everything is old now; "running" still never goes

        report = j.compact(RetentionPolicy(keep_last=2))
        assert set(report.tasks_removed) == {"old1", "old2"}
        assert report.entries_removed == 6 + 5
        assert report.blobs_removed == 3  # 2 per-task outputs + the shared one
        assert {t.task_id for t in j.tasks()} == {"mid", "new", "running"}
        assert j.entries("old1") == []

        report = j.compact(RetentionPolicy(max_age_days=30))
        assert set(report.tasks_removed) == {"mid", "new"}
        assert [t.task_id for t in j.tasks()] == ["running"]
        assert j.audit("running").ok
        with raw(j) as db:
            assert db.execute("SELECT COUNT(*) FROM blobs").fetchone() == (1,)


def test_compaction_by_age_keeps_recent(tmp_path: Path) -> None:
    clock = FakeClock()
    with SqliteJournal(JournalConfig(data_dir=tmp_path), clock=clock) as j:
        j.append("a", "task.submitted", submitted("a"))
        finish(j, "a", "cancelled")
        clock.now += timedelta(days=5)
        j.append("b", "task.submitted", submitted("b"))
        finish(j, "b")
        clock.now += timedelta(days=2)
        assert j.compact(RetentionPolicy(max_age_days=3)).tasks_removed == ("a",)
        assert j.compact(RetentionPolicy()).tasks_removed == ()
        assert [t.task_id for t in j.tasks()] == ["b"]


# -- idempotency keys ---------------------------------------------------------------------------


def test_idempotency_key() -> None:
    key = idempotency_key("team:7", "s2", 3)
    assert key == "team:7:s2:3"
    assert parse_idempotency_key(key) == ("team:7", "s2", 3)
    with pytest.raises(ValueError):
        idempotency_key("t", "s", 0)


# -- properties ---------------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3000)), min_size=1, max_size=30
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_untampered_logs_always_audit_clean(ops: list[tuple[str, int]], tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("j")
    with open_journal(path, blob_threshold_bytes=1000) as j:
        written: dict[str, list[object]] = {}
        for task_id, size in ops:
            if task_id not in written:
                written[task_id] = [j.append(task_id, "task.submitted", submitted(task_id))]
            written[task_id].append(j.append(task_id, "step.result", result(task_id, "o" * size)))
        for task_id, entries in written.items():
            assert j.entries(task_id) == entries
            report = j.audit(task_id)
            assert report.ok, report.problems
            assert report.entries_checked == len(entries)
            assert fold(j.entries(task_id)).last_seq == len(entries)


def test_an_unsynced_write_is_kept_and_full_sync_comes_back(tmp_path: Path) -> None:
    with open_journal(tmp_path, synchronous="FULL") as journal:
        journal.append("t1", "task.submitted", submitted("t1"))
        started = StepStarted(step_id="s1", attempt=1, idempotency_key="t1:s1:1")
        journal.append_many("t1", [("step.started", started)], sync=False)
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        journal.append("t1", "step.result", result("t1"))
        assert [e.kind for e in journal.entries("t1")] == [
            "task.submitted",
            "step.started",
            "step.result",
        ]
        assert journal.audit("t1").ok
    with open_journal(tmp_path, synchronous="FULL") as again:
        assert len(again.entries("t1")) == 3


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sync_fsyncs_the_write_ahead_log_under_full_only(
    tmp_path: Path, synchronous: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    with open_journal(tmp_path, synchronous=synchronous) as journal:
        journal.append("t1", "task.submitted", submitted("t1"))
        started = StepStarted(step_id="s1", attempt=1, idempotency_key="t1:s1:1")
        journal.append_many("t1", [("step.started", started)], sync=False)
        monkeypatch.setattr(os, "fsync", fsync)
        # from another thread, as the coordinator calls it, while this one keeps appending
        worker = threading.Thread(target=journal.sync)
        worker.start()
        journal.append_many("t1", [("step.result", result("t1"))], sync=False)
        worker.join()
        monkeypatch.undo()
        assert synced == (["journal.sqlite3-wal"] if synchronous == "FULL" else [])
        assert [e.kind for e in journal.entries("t1")][-2:] == ["step.started", "step.result"]
