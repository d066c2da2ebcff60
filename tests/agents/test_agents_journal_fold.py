"""Rebuilding a task's state from its journal, and the transitions it allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents._journal import JournalConfig, SqliteJournal
from agents._journal_fold import ALLOWED, fold
from agents._journal_models import (
    IllegalTransitionError,
    JournalEntry,
    JournalError,
    StateChanged,
    StepAbandoned,
    StepCommitted,
    StepStarted,
    idempotency_key,
)
from protocols import ApprovalDecided, Envelope, TaskSubmitted, Topics
from tests.agents.test_agents_journal import result, submitted


def started(step: str, attempt: int) -> StepStarted:
    return StepStarted(
        step_id=step, attempt=attempt, idempotency_key=idempotency_key("t1", step, attempt)
    )


def committed(step: str, attempt: int, output: str = "ok") -> StepCommitted:
    return StepCommitted(step_id=step, attempt=attempt, output=output, approved=True)


def to(state: str) -> StateChanged:
    return StateChanged.model_validate({"to": state})


def log(journal: SqliteJournal, *payloads: object) -> list[JournalEntry]:
    for payload in payloads:
        kind = payload.payload.type if isinstance(payload, Envelope) else payload.type  # type: ignore[attr-defined]
        journal.append("t1", kind, payload)  # type: ignore[arg-type]
    return journal.entries("t1")


@pytest.fixture
def journal(tmp_path: Path):
    with SqliteJournal(JournalConfig(data_dir=tmp_path, synchronous="NORMAL")) as j:
        yield j


def test_fold_realistic_task(journal: SqliteJournal) -> None:
    approval = ApprovalDecided(task_id="t1", step_id="s2", decision="approve", decided_by="ann")
    entries = log(
        journal,
        submitted("t1", "sum and explain"),
        to("planning"),
        to("running"),
        started("s1", 1),
        result("t1", "41", "s1"),
        to("reviewing"),
        to("running"),
        started("s1", 2),  # the reviewer asked for a revision
        result("t1", "42", "s1"),
        to("reviewing"),
        committed("s1", 2, "42"),
        to("awaiting_approval"),
        Envelope.wrap(approval, sender="ann", topic=Topics.CONTROL, provenance="user"),
        to("running"),
        started("s2", 1),
        started("s2", 1),  # re-dispatched once after a crash, same key
    )
    state = fold(entries)
    assert state.status == "running" and state.goal == "sum and explain"
    assert state.committed["s1"].output == "42" and state.committed["s1"].attempt == 2
    assert set(state.in_flight) == {"s2"}
    assert state.in_flight["s2"].idempotency_key == "t1:s2:1"
    assert state.in_flight["s2"].dispatches == 2
    assert state.next_attempt("s1") == 3 and state.last_seq == len(entries)

    entries = log(journal, committed("s2", 1), to("reviewing"), to("completed"))
    done = fold(entries)
    assert done.finished and done.in_flight == {} and set(done.committed) == {"s1", "s2"}
    assert fold(entries[:-3]) == state  # a prefix folds to the state at that point


def test_replan_resets_steps_but_not_attempts(journal: SqliteJournal) -> None:
    entries = log(
        journal,
        submitted("t1"),
        to("planning"),
        to("running"),
        started("s1", 1),
        committed("s1", 1),
        to("planning"),
        to("running"),
        started("s1", 2),
    )
    state = fold(entries)
    assert state.plan_round == 2 and state.committed == {}
    assert state.in_flight["s1"].attempt == 2


def test_cancel_abandons_in_flight(journal: SqliteJournal) -> None:
    entries = log(
        journal,
        submitted("t1"),
        to("planning"),
        to("running"),
        started("s1", 1),
        StepAbandoned(step_id="s1", attempt=1, reason="cancelled"),
        to("cancelled"),
    )
    state = fold(entries)
    assert state.status == "cancelled" and state.in_flight == {}


def entry(seq: int, payload: object) -> JournalEntry:
    kind = payload.payload.type if isinstance(payload, Envelope) else payload.type  # type: ignore[attr-defined]
    return JournalEntry.model_validate(
        {
            "task_id": "t1",
            "seq": seq,
            "kind": kind,
            "payload": payload,
            "at": "2026-01-01T00:00:00Z",
            "previous_hash": "0" * 64,
            "hash": "0" * 64,
        }
    )


def test_illegal_transition_names_both_states() -> None:
    entries = [entry(1, submitted("t1")), entry(2, to("planning")), entry(3, to("reviewing"))]
    with pytest.raises(IllegalTransitionError, match="planning -> reviewing at seq 3") as caught:
        fold(entries)
    assert (caught.value.source, caught.value.target) == ("planning", "reviewing")


def test_terminal_states_are_final() -> None:
    assert all(not ALLOWED[s] for s in ("completed", "failed", "cancelled"))
    entries = [entry(1, submitted("t1")), entry(2, to("failed")), entry(3, to("running"))]
    with pytest.raises(IllegalTransitionError, match="failed -> running"):
        fold(entries)


@pytest.mark.parametrize(
    ("payloads", "message"),
    [
        ([to("planning")], "must start with task.submitted"),
        ([submitted("t1"), started("s1", 1), committed("s1", 1), started("s1", 2)], "already"),
        ([submitted("t1"), committed("s1", 1)], "without being in flight"),
        ([submitted("t1"), started("s1", 2), started("s1", 1)], "does not follow"),
        ([submitted("t1"), submitted("t1")], "task.submitted again"),
    ],
)
def test_fold_rejects_broken_logs(payloads: list[object], message: str) -> None:
    with pytest.raises(JournalError, match=message):
        fold(entry(i, p) for i, p in enumerate(payloads, start=1))


def test_fold_rejects_gaps_and_empty_logs() -> None:
    with pytest.raises(JournalError, match="expected seq 2, got 3"):
        fold([entry(1, submitted("t1")), entry(3, to("planning"))])
    with pytest.raises(JournalError, match="empty"):
        fold([])
    assert isinstance(submitted("t1").payload, TaskSubmitted)
