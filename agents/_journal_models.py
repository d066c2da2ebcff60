"""Journal records: entries, the coordinator's decisions, audit reports and retention policy.

A journal entry carries either an ``Envelope`` (a message that went through the coordinator)
or a ``JournalDecision`` (something the coordinator decided). Both are frozen pydantic models,
so an entry read back is exactly what was written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from protocols import Envelope, StepId, TaskId, TroupeError

TaskStatus = Literal[
    "submitted",
    "planning",
    "awaiting_approval",
    "running",
    "reviewing",
    "completed",
    "failed",
    "cancelled",
]
"""The explicit states of a task (issue 7)."""

TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})
"""States a task never leaves."""

GENESIS_HASH: Final = "0" * 64
"""The ``previous_hash`` of a task's first entry."""


class JournalError(TroupeError):
    """The journal refused a write, or what it holds is inconsistent."""

    default_code = "journal_error"


class IllegalTransitionError(JournalError):
    """A state change that the task state machine does not allow."""

    default_code = "illegal_transition"

    def __init__(self, source: str, target: str, *, task_id: str, seq: int | None = None):
        where = f" at seq {seq}" if seq is not None else ""
        super().__init__(
            f"task {task_id}: illegal transition {source} -> {target}{where}",
        )
        self.source = source
        self.target = target


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StateChanged(_Frozen):
    """The coordinator moved the task to another state."""

    type: Literal["state.changed"] = "state.changed"
    to: TaskStatus = Field(description="The state the task is in from now on.")
    reason: str = Field(default="", max_length=2000, description="Why, for people and audits.")


class StepStarted(_Frozen):
    """An attempt of a step was dispatched to an executor (it is in flight until it ends)."""

    type: Literal["step.started"] = "step.started"
    step_id: StepId = Field(description="The step within the current plan.")
    attempt: int = Field(
        ge=1, description="Attempt number; grows across revisions and replans of this step id."
    )
    idempotency_key: str = Field(description="``task:step:attempt``, passed to tools.")


class StepCommitted(_Frozen):
    """A step's result was accepted: it is never run again in this plan."""

    type: Literal["step.committed"] = "step.committed"
    step_id: StepId = Field(description="The step within the current plan.")
    attempt: int = Field(ge=1, description="The attempt whose result was accepted.")
    output: str = Field(description="The accepted output.")
    approved: bool = Field(description="Whether the reviewer approved it (or it was accepted).")


class StepAbandoned(_Frozen):
    """An in-flight attempt was given up (cancel, budget, replan)."""

    type: Literal["step.abandoned"] = "step.abandoned"
    step_id: StepId = Field(description="The step within the current plan.")
    attempt: int = Field(ge=1, description="The attempt given up.")
    reason: str = Field(default="", max_length=2000, description="Why it was given up.")


JournalDecision = Annotated[
    StateChanged | StepStarted | StepCommitted | StepAbandoned, Field(discriminator="type")
]
"""A coordinator decision, told apart by ``type``."""

DECISION_ADAPTER: Final[TypeAdapter[JournalDecision]] = TypeAdapter(JournalDecision)
DECISION_KINDS: Final[frozenset[str]] = frozenset(
    {"state.changed", "step.started", "step.committed", "step.abandoned"}
)

JournalPayload = Envelope | JournalDecision
"""What one entry holds."""


class JournalEntry(_Frozen):
    """One entry of a task's append-only log."""

    task_id: TaskId = Field(description="The task the entry belongs to.")
    seq: int = Field(ge=1, description="Position in the task's log: 1, 2, 3 ... without gaps.")
    kind: str = Field(description="The message type (``step.result``) or the decision type.")
    payload: JournalPayload = Field(description="The envelope or the decision.")
    at: datetime = Field(description="When it was written (UTC).")
    previous_hash: str = Field(description="Hash of the previous entry (zeros for the first).")
    hash: str = Field(description="sha256(previous_hash + canonical entry bytes), hex.")
    blob: str | None = Field(
        default=None, description="sha256 of the payload when it is stored in the blob table."
    )


class TaskInfo(_Frozen):
    """A task as the journal's index knows it."""

    task_id: TaskId = Field(description="The task.")
    status: TaskStatus = Field(description="The last state journaled.")
    entries: int = Field(ge=0, description="Number of entries (the last seq).")
    created_at: datetime = Field(description="When its first entry was written.")
    updated_at: datetime = Field(description="When its last entry was written.")
    finished_at: datetime | None = Field(
        default=None, description="When it reached a terminal state."
    )


AuditProblemKind = Literal[
    "missing",
    "out_of_order",
    "chain_broken",
    "hash_mismatch",
    "payload_mismatch",
    "unreadable",
    "head_mismatch",
]


class AuditProblem(_Frozen):
    """One thing wrong in a task's log."""

    seq: int = Field(description="The sequence number where it shows.")
    problem: AuditProblemKind = Field(description="What kind of damage.")
    detail: str = Field(description="What was expected and what was found.")


class AuditReport(_Frozen):
    """The result of recomputing a task's hash chain."""

    task_id: TaskId = Field(description="The task audited.")
    entries_checked: int = Field(ge=0, description="Rows read.")
    head_hash: str | None = Field(description="The hash of the last entry read.")
    problems: tuple[AuditProblem, ...] = Field(default=(), description="Empty when intact.")

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        """The lowest sequence number with a problem, if any."""
        return min((p.seq for p in self.problems), default=None)


class RetentionPolicy(_Frozen):
    """Which finished tasks ``compact`` removes. Unfinished tasks are never touched.

    A finished task is removed when it is older than ``max_age_days`` **or** when it is not
    among the ``keep_last`` most recently finished tasks. A rule left as None does not apply.
    """

    max_age_days: float | None = Field(
        default=None, ge=0, description="Remove finished tasks that finished longer ago than this."
    )
    keep_last: int | None = Field(
        default=None, ge=0, description="Keep at most this many finished tasks (newest first)."
    )


class CompactionReport(_Frozen):
    """What ``compact`` removed."""

    tasks_removed: tuple[TaskId, ...] = Field(description="Tasks deleted with all their entries.")
    entries_removed: int = Field(ge=0, description="Entries deleted.")
    blobs_removed: int = Field(ge=0, description="Blobs no longer referenced and deleted.")


def idempotency_key(task_id: str, step_id: str, attempt: int) -> str:
    """The key passed to tools so their side effects happen once: ``task:step:attempt``."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if ":" in step_id:
        raise ValueError(f"step id {step_id!r} may not contain ':'")
    return f"{task_id}:{step_id}:{attempt}"


def parse_idempotency_key(key: str) -> tuple[str, str, int]:
    """Splits ``task:step:attempt`` (the task id may itself contain ``:``)."""
    task_id, step_id, attempt = key.rsplit(":", 2)
    return task_id, step_id, int(attempt)
