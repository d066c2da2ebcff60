"""What a task's journal already holds, arranged for the coordinator to re-execute against.

Recovery does not restore a snapshot: the coordinator runs the task's logic again from the
start, and every reply the journal already holds is taken from here instead of being asked
for again. The logic is deterministic given the replies, so it reaches the same point, with the
same attempts and idempotency keys, and goes on live from there. Nothing committed runs twice;
an attempt that was in flight (started, no reply) is sent again with the same key.

Replies are keyed by what the coordinator knows when it asks:

- plans: the n-th ``plan.proposed`` answers the n-th planning round;
- step results: ``(step id, attempt)`` (attempt numbers grow across revisions and replans);
- verdicts: the verdict after a step's result belongs to that attempt;
- approvals: the n-th gate of a step id, with its escalations, and the first decision that
  came while it was open (a later, racing decision is ignored and says so in the trace).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from agents._journal_fold import TaskState, fold
from agents._journal_models import JournalEntry, StepStarted
from protocols import (
    ApprovalDecided,
    ApprovalRequested,
    CancelTask,
    Envelope,
    PlanProposed,
    ReviewVerdict,
    StepResult,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
)


@dataclass
class Gate:
    """One approval gate of a step: its request (and escalations) and the decision, if any."""

    requests: list[ApprovalRequested] = field(default_factory=list)
    decision: ApprovalDecided | None = None
    ignored: list[ApprovalDecided] = field(default_factory=list)


@dataclass
class History:
    """A task's journal as recorded replies, decisions and gates; ``pending`` counts what the
    re-execution has not consumed yet (0: caught up, every new action is live)."""

    task: TaskSubmitted
    root_id: str
    state: TaskState | None = None
    plans: list[Envelope] = field(default_factory=list)
    results: dict[tuple[str, int], Envelope] = field(default_factory=dict)
    verdicts: dict[tuple[str, int], Envelope] = field(default_factory=dict)
    gates: dict[str, list[Gate]] = field(default_factory=lambda: defaultdict(list))
    dispatches: dict[tuple[str, int], int] = field(default_factory=dict)
    cancel: CancelTask | None = None
    outcome: TaskCompleted | TaskFailed | None = None
    last_seq: int = 0
    pending: int = 0

    @classmethod
    def new(cls, submitted: Envelope) -> History:
        """The history of a task that has only been submitted."""
        assert isinstance(submitted.payload, TaskSubmitted)
        return cls(task=submitted.payload, root_id=submitted.message_id, last_seq=1)

    @classmethod
    def from_entries(cls, entries: list[JournalEntry]) -> History:
        """Arranges a task's entries (as read from its journal, in order)."""
        first = entries[0].payload
        assert isinstance(first, Envelope)
        history = cls.new(first)
        history.state = fold(entries)
        latest_attempt: dict[str, int] = {}
        for entry in entries[1:]:
            history.last_seq = entry.seq
            payload = entry.payload
            if isinstance(payload, StepStarted):
                key = (payload.step_id, payload.attempt)
                history.dispatches[key] = history.dispatches.get(key, 0) + 1
                continue
            if not isinstance(payload, Envelope):
                continue
            message = payload.payload
            if isinstance(message, PlanProposed):
                history.plans.append(payload)
            elif isinstance(message, StepResult):
                latest_attempt[message.step_id] = message.attempt
                history.results[(message.step_id, message.attempt)] = payload
            elif isinstance(message, ReviewVerdict):
                attempt = latest_attempt.get(message.step_id)
                if attempt is not None:
                    history.verdicts.setdefault((message.step_id, attempt), payload)
            elif isinstance(message, ApprovalRequested):
                history._requested(message)
            elif isinstance(message, ApprovalDecided):
                history._decided(message)
            elif isinstance(message, CancelTask):
                history.cancel = history.cancel or message
            elif isinstance(message, TaskCompleted | TaskFailed):
                history.outcome = message
        history.pending = (
            len(history.plans)
            + len(history.results)
            + len(history.verdicts)
            + sum(
                len(g.requests) + (g.decision is not None)
                for gs in history.gates.values()
                for g in gs
            )
        )
        return history

    def _requested(self, request: ApprovalRequested) -> None:
        gates = self.gates[request.step.id]
        if request.escalation > 0 and gates and gates[-1].decision is None:
            gates[-1].requests.append(request)
        else:
            gates.append(Gate(requests=[request]))

    def _decided(self, decision: ApprovalDecided) -> None:
        gates = self.gates.get(decision.step_id, [])
        if gates and gates[-1].decision is None:
            gates[-1].decision = decision
        elif gates:
            gates[-1].ignored.append(decision)

    # -- consumption -------------------------------------------------------------------------

    def take_plan(self, round_no: int) -> Envelope | None:
        """The recorded reply of planning round ``round_no`` (1-based), if any."""
        if round_no <= len(self.plans):
            self.pending -= 1
            return self.plans[round_no - 1]
        return None

    def take_result(self, step_id: str, attempt: int) -> Envelope | None:
        """The recorded result of an attempt, if any."""
        found = self.results.get((step_id, attempt))
        if found is not None:
            self.pending -= 1
        return found

    def take_verdict(self, step_id: str, attempt: int) -> Envelope | None:
        """The recorded verdict on an attempt, if any."""
        found = self.verdicts.get((step_id, attempt))
        if found is not None:
            self.pending -= 1
        return found

    def gate(self, step_id: str, number: int) -> Gate | None:
        """The ``number``-th (1-based) approval gate of ``step_id``, if it was opened."""
        gates = self.gates.get(step_id, [])
        return gates[number - 1] if number <= len(gates) else None

    def consume_gate(self, gate: Gate) -> None:
        """Marks a recorded gate (its requests and decision) as consumed."""
        self.pending -= len(gate.requests) + (gate.decision is not None)

    @property
    def caught_up(self) -> bool:
        """Whether everything recorded has been consumed (new actions are live)."""
        return self.pending <= 0
