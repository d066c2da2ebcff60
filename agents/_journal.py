"""The task journal: an append-only, hash-chained event log per task, in SQLite (WAL).

Every message the coordinator handles and every decision it makes is appended here *before*
it acts on it; ``append`` returns only once the entry is on disk. Recovery folds a task's
entries back into a ``TaskState`` (``agents._journal_fold``).

Durability: ``synchronous=FULL`` by default. In WAL mode NORMAL only syncs the WAL at
checkpoints, so an OS crash or power loss can lose the last commits although ``append`` had
returned; the issue promises that a journaled (and acknowledged) task survives, so each
commit is fsync'd. ``bench/durability.py`` measures what that costs on this disk.

Concurrency: one ``SqliteJournal`` (one connection) per process, shared by its threads under
a lock. Each append is one ``BEGIN IMMEDIATE`` transaction that reads the task's last
sequence number and hash and writes the next entry, so sequences are gap-free even with
several processes appending to the same file.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents._journal_audit import audit_rows
from agents._journal_codec import (
    canonical_entry,
    chain_hash,
    decode_payload,
    encode_payload,
    payload_kind,
)
from agents._journal_fold import check_transition
from agents._journal_models import (
    GENESIS_HASH,
    TERMINAL,
    AuditReport,
    CompactionReport,
    JournalEntry,
    JournalError,
    JournalPayload,
    RetentionPolicy,
    StateChanged,
    TaskInfo,
    TaskStatus,
)
from protocols import Envelope, TaskSubmitted

DB_NAME: Final = "journal.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    payload TEXT,
    blob_sha TEXT,
    payload_sha TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    sha TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_blob ON entries (blob_sha) WHERE blob_sha IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, finished_at);
"""


class JournalConfig(BaseModel):
    """Settings of the SQLite journal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(description="Directory of the journal file (created if missing).")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL fsyncs every commit (durable when append returns); NORMAL may lose "
        "the last commits on power loss or OS crash, not on a process crash.",
    )
    blob_threshold_bytes: int = Field(
        default=4096, ge=0, description="Payloads larger than this go to the blob table."
    )
    busy_timeout_ms: int = Field(
        default=10_000, ge=0, description="How long a writer waits for another process's lock."
    )


class Journal(Protocol):
    """An append-only event log per task. SQLite today; Postgres can follow."""

    def append(self, task_id: str, kind: str, payload: JournalPayload) -> JournalEntry:
        """Writes the next entry of the task; it is durable when this returns."""
        ...

    def append_many(
        self, task_id: str, items: Sequence[tuple[str, JournalPayload]], *, sync: bool = True
    ) -> list[JournalEntry]:
        """Writes consecutive entries atomically (all or none); durable when this returns
        unless ``sync`` is False (then from the next synced write on)."""
        ...

    def sync(self) -> None:
        """Makes every entry committed so far durable (for ``sync=False`` writes); callable
        from another thread while appends go on."""
        ...

    def entries(self, task_id: str, *, after_seq: int = 0) -> list[JournalEntry]:
        """The task's entries after ``after_seq``, in sequence order."""
        ...

    def last(self, task_id: str) -> JournalEntry | None:
        """The task's latest entry, or None for an unknown task."""
        ...

    def tasks(self, status: TaskStatus | None = None) -> list[TaskInfo]:
        """Known tasks, optionally only those in ``status``."""
        ...

    def task(self, task_id: str) -> TaskInfo | None:
        """One task as the index knows it, or None for an unknown task."""
        ...

    def audit(self, task_id: str) -> AuditReport:
        """Recomputes the task's hash chain and reports every damaged entry."""
        ...

    def compact(self, policy: RetentionPolicy) -> CompactionReport:
        """Deletes finished tasks per ``policy``; never touches unfinished ones."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqliteJournal:
    """The journal in one SQLite file (WAL mode) in a data directory.

    Args:
        config: Where and how to store it.
        clock: The time source for entry timestamps and retention (tests pass a fake).
    """

    def __init__(self, config: JournalConfig, *, clock: Callable[[], datetime] = _utc_now):
        self._config = config
        self._clock = clock
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = config.data_dir / DB_NAME
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writes).
        self._db = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=config.busy_timeout_ms / 1000,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={config.synchronous}")
        self._db.execute(f"PRAGMA busy_timeout={config.busy_timeout_ms}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Closes the connection; the journal object is unusable afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:
            raise JournalError("a SqliteJournal cannot cross a fork; open one per process")
        with self._lock:
            yield self._db

    @contextmanager
    def _write(self, *, sync: bool = True) -> Iterator[sqlite3.Connection]:
        lazy = not sync and self._config.synchronous == "FULL"
        with self._use() as db:
            if lazy:  # WAL + NORMAL: no fsync now; the next FULL commit syncs this one too
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                if lazy:
                    db.execute("PRAGMA synchronous=FULL")

    # -- writing -----------------------------------------------------------------------------

    def append(self, task_id: str, kind: str, payload: JournalPayload) -> JournalEntry:
        """Writes the next entry of ``task_id``; durable (fsync'd with FULL) when it returns.

        Raises:
            JournalError: ``kind`` does not match the payload, the envelope belongs to another
                task, or the first entry of a task is not its ``task.submitted``.
            IllegalTransitionError: a ``state.changed`` the state machine does not allow.
        """
        return self.append_many(task_id, [(kind, payload)])[0]

    def append_many(
        self, task_id: str, items: Sequence[tuple[str, JournalPayload]], *, sync: bool = True
    ) -> list[JournalEntry]:
        """Writes consecutive entries of ``task_id`` in one transaction (one fsync): all of
        them are on disk when it returns, or none is.

        ``sync=False`` skips the fsync of this transaction (with ``synchronous=FULL``): the
        entries survive a process crash at once and a power loss from the next synced write
        on. For entries that recovery re-derives anyway (a step's dispatch, a non-terminal
        state change), which then cost no fsync of their own.

        Raises:
            JournalError, IllegalTransitionError: as ``append``; nothing is written then.
        """
        prepared = []
        for kind, payload in items:
            self._check_payload(task_id, kind, payload)
            data = encode_payload(payload)
            prepared.append((kind, payload, data, hashlib.sha256(data).hexdigest()))
        if not prepared:
            return []
        at = self._clock().astimezone(UTC)
        at_text = at.isoformat()
        written: list[JournalEntry] = []
        with self._write(sync=sync) as db:
            row = db.execute(
                "SELECT status, last_seq, head_hash FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            rows, blobs = [], []
            for kind, payload, data, payload_sha in prepared:
                status, seq, previous = self._next_position(task_id, kind, payload, row)
                large = len(data) > self._config.blob_threshold_bytes
                digest = chain_hash(
                    previous, canonical_entry(task_id, seq, kind, at_text, payload_sha)
                )
                if large:
                    blobs.append((payload_sha, data))
                rows.append(
                    (
                        task_id,
                        seq,
                        kind,
                        at_text,
                        None if large else data.decode(),
                        payload_sha if large else None,
                        payload_sha,
                        previous,
                        digest,
                    )
                )
                row = (status, seq, digest)
                # Every field is ours and checked above: no validation pass needed.
                written.append(
                    JournalEntry.model_construct(
                        task_id=task_id,
                        seq=seq,
                        kind=kind,
                        payload=payload,
                        at=at,
                        previous_hash=previous,
                        hash=digest,
                        blob=payload_sha if large else None,
                    )
                )
            if blobs:
                db.executemany("INSERT OR IGNORE INTO blobs (sha, data) VALUES (?, ?)", blobs)
            db.executemany(
                "INSERT INTO entries (task_id, seq, kind, at, payload, blob_sha, payload_sha,"
                " previous_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            status, seq, digest = row
            self._upsert_task(db, task_id, status=status, seq=seq, head=digest, at=at_text)
        return written

    def sync(self) -> None:
        """Makes every entry committed so far durable: one fsync of the write-ahead log.

        For ``append_many(..., sync=False)`` writes whose durability may follow a moment later,
        off the writer's critical path (the coordinator calls this from a worker thread). It
        takes no lock, so appends go on meanwhile; what they commit after the fsync began is
        not covered. A checkpoint in between is safe: SQLite syncs the log before copying it
        into the database file and syncs that file after. A no-op with ``synchronous=NORMAL``,
        which gave that guarantee up.
        """
        if self._config.synchronous != "FULL":
            return
        try:
            fd = os.open(self._wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return  # no log: every commit is in the database file, synced by its checkpoint
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _check_payload(task_id: str, kind: str, payload: JournalPayload) -> None:
        expected = payload_kind(payload)
        if kind != expected:
            raise JournalError(f"entry kind {kind!r} does not match its payload ({expected!r})")
        if isinstance(payload, Envelope) and payload.task_id not in (None, task_id):
            raise JournalError(
                f"envelope of task {payload.task_id} cannot go into the journal of {task_id}"
            )

    @staticmethod
    def _next_position(
        task_id: str, kind: str, payload: JournalPayload, row: tuple[str, int, str] | None
    ) -> tuple[str, int, str]:
        """(status after the entry, its seq, the previous hash)."""
        if row is None:
            if not (isinstance(payload, Envelope) and isinstance(payload.payload, TaskSubmitted)):
                raise JournalError(
                    f"task {task_id} is unknown: its first entry must be task.submitted, not {kind}"
                )
            return "submitted", 1, GENESIS_HASH
        status, last_seq, head = row
        if isinstance(payload, Envelope) and isinstance(payload.payload, TaskSubmitted):
            raise JournalError(f"task {task_id} was already submitted")
        if isinstance(payload, StateChanged):
            check_transition(status, payload.to, task_id=task_id, seq=last_seq + 1)
            status = payload.to
        return status, last_seq + 1, head

    @staticmethod
    def _upsert_task(
        db: sqlite3.Connection, task_id: str, *, status: str, seq: int, head: str, at: str
    ) -> None:
        finished = at if status in TERMINAL else None
        db.execute(
            "INSERT INTO tasks (task_id, status, last_seq, head_hash, created_at, updated_at,"
            " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET"
            " status = excluded.status, last_seq = excluded.last_seq,"
            " head_hash = excluded.head_hash, updated_at = excluded.updated_at,"
            " finished_at = COALESCE(tasks.finished_at, excluded.finished_at)",
            (task_id, status, seq, head, at, at, finished),
        )

    # -- reading -----------------------------------------------------------------------------

    _SELECT: Final = (
        "SELECT e.task_id, e.seq, e.kind, e.at, COALESCE(e.payload, b.data), e.blob_sha,"
        " e.previous_hash, e.hash FROM entries e LEFT JOIN blobs b ON b.sha = e.blob_sha"
    )

    def entries(self, task_id: str, *, after_seq: int = 0) -> list[JournalEntry]:
        """The task's entries after ``after_seq`` in sequence order, blobs resolved."""
        with self._use() as db:
            rows = db.execute(
                f"{self._SELECT} WHERE e.task_id = ? AND e.seq > ? ORDER BY e.seq",
                (task_id, after_seq),
            ).fetchall()
        return [self._entry(row) for row in rows]

    def last(self, task_id: str) -> JournalEntry | None:
        """The task's latest entry, or None for an unknown task."""
        with self._use() as db:
            row = db.execute(
                f"{self._SELECT} WHERE e.task_id = ? ORDER BY e.seq DESC LIMIT 1", (task_id,)
            ).fetchone()
        return None if row is None else self._entry(row)

    _TASK_COLUMNS: Final = (
        "SELECT task_id, status, last_seq, created_at, updated_at, finished_at FROM tasks"
    )

    def tasks(self, status: TaskStatus | None = None) -> list[TaskInfo]:
        """Known tasks (oldest first), optionally only those in ``status``."""
        query: str = self._TASK_COLUMNS
        params: tuple[str, ...] = ()
        if status is not None:
            query, params = f"{query} WHERE status = ?", (status,)
        with self._use() as db:
            rows = db.execute(f"{query} ORDER BY created_at, task_id", params).fetchall()
        return [_task_info(r) for r in rows]

    def task(self, task_id: str) -> TaskInfo | None:
        """One task as the index knows it (one row read), or None for an unknown task."""
        with self._use() as db:
            row = db.execute(f"{self._TASK_COLUMNS} WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else _task_info(row)

    @staticmethod
    def _entry(
        row: tuple[str, int, str, str, str | bytes | None, str | None, str, str],
    ) -> JournalEntry:
        task_id, seq, kind, at, data, blob, previous, digest = row
        if data is None:
            raise JournalError(f"task {task_id} seq {seq}: blob {blob} is missing")
        return JournalEntry(
            task_id=task_id,
            seq=seq,
            kind=kind,
            payload=decode_payload(kind, data),
            at=datetime.fromisoformat(at),
            previous_hash=previous,
            hash=digest,
            blob=blob,
        )

    # -- audit and retention -----------------------------------------------------------------

    def audit(self, task_id: str) -> AuditReport:
        """Recomputes the task's chain from the stored bytes; see ``agents._journal_audit``."""
        with self._use() as db:
            rows = db.execute(
                "SELECT e.seq, e.kind, e.at, COALESCE(e.payload, b.data), e.payload_sha,"
                " e.previous_hash, e.hash FROM entries e LEFT JOIN blobs b ON b.sha = e.blob_sha"
                " WHERE e.task_id = ? ORDER BY e.seq",
                (task_id,),
            ).fetchall()
            head = db.execute(
                "SELECT last_seq, head_hash FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        return audit_rows(task_id, rows, head)

    def compact(self, policy: RetentionPolicy) -> CompactionReport:
        """Deletes finished tasks chosen by ``policy`` and the blobs no entry uses any more."""
        cutoff = None
        if policy.max_age_days is not None:
            cutoff = (self._clock() - timedelta(days=policy.max_age_days)).astimezone(UTC)
        with self._write() as db:
            finished = db.execute(
                "SELECT task_id, finished_at FROM tasks WHERE finished_at IS NOT NULL"
                " ORDER BY finished_at DESC, task_id DESC"
            ).fetchall()
            doomed = [
                task_id
                for rank, (task_id, finished_at) in enumerate(finished)
                if (cutoff is not None and datetime.fromisoformat(finished_at) < cutoff)
                or (policy.keep_last is not None and rank >= policy.keep_last)
            ]
            entries = 0
            for task_id in doomed:
                entries += db.execute("DELETE FROM entries WHERE task_id = ?", (task_id,)).rowcount
                db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            blobs = db.execute(
                "DELETE FROM blobs WHERE sha NOT IN"
                " (SELECT blob_sha FROM entries WHERE blob_sha IS NOT NULL)"
            ).rowcount
        with self._use() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return CompactionReport(
            tasks_removed=tuple(doomed), entries_removed=entries, blobs_removed=blobs
        )


def _task_info(row: Sequence[Any]) -> TaskInfo:
    """A ``tasks`` row (as ``_TASK_COLUMNS`` selects it); pydantic parses the ISO times."""
    task_id, status, entries, created_at, updated_at, finished_at = row
    return TaskInfo(
        task_id=task_id,
        status=status,
        entries=entries,
        created_at=created_at,
        updated_at=updated_at,
        finished_at=finished_at,
    )
