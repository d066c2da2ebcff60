"""Rebuilding a task's state from its journal: the fold recovery uses.

``TaskState.apply`` takes one entry and returns the next state; ``fold`` applies a whole log.
Status changes only through ``state.changed`` decisions (the first entry, ``task.submitted``,
puts the task in ``submitted``), along the edges in ``ALLOWED``. A log that breaks a rule
raises ``JournalError`` naming the entry; an illegal state change names both states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from agents._journal_models import (
    TERMINAL,
    IllegalTransitionError,
    JournalEntry,
    JournalError,
    StateChanged,
    StepAbandoned,
    StepCommitted,
    StepStarted,
    TaskStatus,
)
from protocols import Envelope, TaskSubmitted

ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "submitted": frozenset({"planning", "failed", "cancelled"}),
    "planning": frozenset({"running", "awaiting_approval", "failed", "cancelled"}),
    "awaiting_approval": frozenset({"running", "planning", "failed", "cancelled"}),
    "running": frozenset(
        {"reviewing", "awaiting_approval", "planning", "completed", "failed", "cancelled"}
    ),
    "reviewing": frozenset(
        {"running", "awaiting_approval", "planning", "completed", "failed", "cancelled"}
    ),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
"""Every legal state change. Terminal states have none."""


def check_transition(source: str, target: str, *, task_id: str, seq: int | None = None) -> None:
    """Raises ``IllegalTransitionError`` unless ``source -> target`` is in ``ALLOWED``."""
    if target not in ALLOWED.get(source, frozenset()):
        raise IllegalTransitionError(source, target, task_id=task_id, seq=seq)


class CommittedStep(BaseModel):
    """A step whose result was accepted in the current plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: int = Field(description="The attempt whose result was accepted.")
    output: str = Field(description="The accepted output.")
    approved: bool = Field(description="Whether the reviewer approved it.")


class InFlightStep(BaseModel):
    """A step attempt dispatched and not yet committed or abandoned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt: int = Field(description="The attempt in flight.")
    idempotency_key: str = Field(description="The key its tools received.")
    dispatches: int = Field(
        default=1, ge=1, description="Times this same attempt was sent (2 after one re-run)."
    )


class TaskState(BaseModel):
    """A task's state as its journal says: what recovery resumes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str = Field(description="The task.")
    goal: str = Field(description="The submitted goal.")
    status: TaskStatus = Field(default="submitted", description="The last journaled state.")
    plan_round: int = Field(
        default=0, ge=0, description="Times the task entered planning (1 after the first plan)."
    )
    committed: dict[str, CommittedStep] = Field(
        default_factory=dict, description="Accepted steps of the current plan, by step id."
    )
    in_flight: dict[str, InFlightStep] = Field(
        default_factory=dict, description="Dispatched, unfinished attempts, by step id."
    )
    last_attempt: dict[str, int] = Field(
        default_factory=dict, description="Highest attempt ever started per step id (any plan)."
    )
    last_seq: int = Field(default=0, ge=0, description="The last entry applied.")

    @property
    def finished(self) -> bool:
        """Whether the task is in a terminal state."""
        return self.status in TERMINAL

    def next_attempt(self, step_id: str) -> int:
        """The attempt number a fresh attempt of ``step_id`` must use (keys never repeat)."""
        return self.last_attempt.get(step_id, 0) + 1

    def apply(self, entry: JournalEntry) -> TaskState:
        """The state after ``entry``.

        Raises:
            JournalError: the entry does not follow from this state (wrong task, gap in the
                sequence, a step committed twice, an attempt going backwards).
            IllegalTransitionError: a state change not in ``ALLOWED``.
        """
        if entry.task_id != self.task_id:
            raise JournalError(f"entry of task {entry.task_id} applied to task {self.task_id}")
        if entry.seq != self.last_seq + 1:
            raise JournalError(
                f"task {self.task_id}: expected seq {self.last_seq + 1}, got {entry.seq}"
            )
        payload = entry.payload
        update: dict[str, object] = {"last_seq": entry.seq}
        if isinstance(payload, StateChanged):
            update |= self._changed(payload, entry.seq)
        elif isinstance(payload, StepStarted):
            update |= self._started(payload, entry.seq)
        elif isinstance(payload, StepCommitted):
            update |= self._committed(payload, entry.seq)
        elif isinstance(payload, StepAbandoned):
            update |= self._abandoned(payload, entry.seq)
        elif isinstance(payload.payload, TaskSubmitted):
            raise JournalError(f"task {self.task_id}: task.submitted again at seq {entry.seq}")
        # Other envelopes are the record of messages; they do not change the state.
        return self.model_copy(update=update)

    def _changed(self, decision: StateChanged, seq: int) -> dict[str, object]:
        check_transition(self.status, decision.to, task_id=self.task_id, seq=seq)
        update: dict[str, object] = {"status": decision.to}
        if decision.to == "planning":
            # A new plan: its steps start from nothing (step ids may repeat across plans).
            update |= {"plan_round": self.plan_round + 1, "committed": {}, "in_flight": {}}
        return update

    def _started(self, decision: StepStarted, seq: int) -> dict[str, object]:
        self._require_active(decision.type, seq)
        if decision.step_id in self.committed:
            raise JournalError(
                f"task {self.task_id}: step {decision.step_id} started at seq {seq} but it was "
                "already committed (committed steps never run again)"
            )
        current = self.in_flight.get(decision.step_id)
        if current is not None and current.attempt == decision.attempt:
            again = current.model_copy(update={"dispatches": current.dispatches + 1})
            return {"in_flight": {**self.in_flight, decision.step_id: again}}
        if decision.attempt <= self.last_attempt.get(decision.step_id, 0):
            raise JournalError(
                f"task {self.task_id}: step {decision.step_id} attempt {decision.attempt} at seq "
                f"{seq} does not follow attempt {self.last_attempt[decision.step_id]}"
            )
        flight = InFlightStep(attempt=decision.attempt, idempotency_key=decision.idempotency_key)
        return {
            "in_flight": {**self.in_flight, decision.step_id: flight},
            "last_attempt": {**self.last_attempt, decision.step_id: decision.attempt},
        }

    def _committed(self, decision: StepCommitted, seq: int) -> dict[str, object]:
        self._require_active(decision.type, seq)
        if decision.step_id in self.committed:
            raise JournalError(
                f"task {self.task_id}: step {decision.step_id} committed twice (seq {seq})"
            )
        flight = self.in_flight.get(decision.step_id)
        if flight is None or flight.attempt != decision.attempt:
            raise JournalError(
                f"task {self.task_id}: step {decision.step_id} attempt {decision.attempt} "
                f"committed at seq {seq} without being in flight"
            )
        in_flight = {k: v for k, v in self.in_flight.items() if k != decision.step_id}
        done = CommittedStep(
            attempt=decision.attempt, output=decision.output, approved=decision.approved
        )
        return {"in_flight": in_flight, "committed": {**self.committed, decision.step_id: done}}

    def _abandoned(self, decision: StepAbandoned, seq: int) -> dict[str, object]:
        flight = self.in_flight.get(decision.step_id)
        if flight is None or flight.attempt != decision.attempt:
            raise JournalError(
                f"task {self.task_id}: step {decision.step_id} attempt {decision.attempt} "
                f"abandoned at seq {seq} without being in flight"
            )
        return {"in_flight": {k: v for k, v in self.in_flight.items() if k != decision.step_id}}

    def _require_active(self, kind: str, seq: int) -> None:
        if self.finished:
            raise JournalError(
                f"task {self.task_id}: {kind} at seq {seq} after the task was {self.status}"
            )


def initial_state(entry: JournalEntry) -> TaskState:
    """The state after a task's first entry, which must be its ``task.submitted`` envelope."""
    payload = entry.payload
    if entry.seq != 1 or not (
        isinstance(payload, Envelope) and isinstance(payload.payload, TaskSubmitted)
    ):
        raise JournalError(
            f"task {entry.task_id}: the log must start with task.submitted at seq 1, found "
            f"{entry.kind} at seq {entry.seq}"
        )
    return TaskState(task_id=entry.task_id, goal=payload.payload.goal, last_seq=1)


def fold(entries: Iterable[JournalEntry]) -> TaskState:
    """Rebuilds a task's state from its entries in sequence order.

    Raises:
        JournalError: the log is empty or breaks a rule (see ``TaskState.apply``).
        IllegalTransitionError: a state change not in ``ALLOWED``.
    """
    iterator = iter(entries)
    first = next(iterator, None)
    if first is None:
        raise JournalError("cannot fold an empty log")
    state = initial_state(first)
    for entry in iterator:
        state = state.apply(entry)
    return state
