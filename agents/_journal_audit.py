"""Auditing a task's hash chain from the rows as stored.

Each row is checked on its own terms (its payload against its payload sha256, its hash against
``sha256(previous_hash + canonical bytes)``) and against its neighbour (its sequence number and
its ``previous_hash``). After a problem the walk resynchronises on the stored hash, so one
damaged row is reported once instead of breaking every later one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import ValidationError

from agents._journal_codec import canonical_entry, chain_hash, decode_payload
from agents._journal_models import GENESIS_HASH, AuditProblem, AuditReport

Row = tuple[int, str, str, str | bytes | None, str, str, str]
"""seq, kind, at, payload bytes, payload sha256, previous hash, hash."""


def audit_rows(task_id: str, rows: Sequence[Row], head: tuple[int, str] | None) -> AuditReport:
    """Checks ``rows`` (ordered by seq) and the task's recorded head ``(last_seq, hash)``."""
    problems: list[AuditProblem] = []
    previous, expected_seq = GENESIS_HASH, 1
    for seq, kind, at, data, payload_sha, stored_previous, stored_hash in rows:
        if seq > expected_seq:
            missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
            problems.append(
                AuditProblem(seq=expected_seq, problem="missing", detail=f"seq {missing} absent")
            )
        elif seq < expected_seq:
            problems.append(
                AuditProblem(seq=seq, problem="out_of_order", detail=f"expected {expected_seq}")
            )
        if stored_previous != previous:
            problems.append(
                AuditProblem(
                    seq=seq,
                    problem="chain_broken",
                    detail=f"previous_hash {stored_previous[:12]}… but the entry before hashes "
                    f"to {previous[:12]}…",
                )
            )
        problems.extend(_check_payload(seq, data, payload_sha))
        raw = data.encode() if isinstance(data, str) else data
        if raw is not None:
            try:
                decode_payload(kind, raw)
            except ValidationError as exc:
                problems.append(
                    AuditProblem(seq=seq, problem="unreadable", detail=str(exc).splitlines()[0])
                )
        recomputed = chain_hash(
            stored_previous, canonical_entry(task_id, seq, kind, at, payload_sha)
        )
        if recomputed != stored_hash:
            problems.append(
                AuditProblem(
                    seq=seq,
                    problem="hash_mismatch",
                    detail="the entry's fields do not hash to its stored hash",
                )
            )
        previous, expected_seq = stored_hash, max(seq, expected_seq) + 1
    problems.extend(_check_head(rows, head, previous))
    return AuditReport(
        task_id=task_id,
        entries_checked=len(rows),
        head_hash=previous if rows else None,
        problems=tuple(problems),
    )


def _check_payload(seq: int, data: str | bytes | None, payload_sha: str) -> list[AuditProblem]:
    if data is None:
        return [AuditProblem(seq=seq, problem="payload_mismatch", detail="blob is missing")]
    raw = data.encode() if isinstance(data, str) else data
    actual = hashlib.sha256(raw).hexdigest()
    if actual != payload_sha:
        return [
            AuditProblem(
                seq=seq,
                problem="payload_mismatch",
                detail=f"payload hashes to {actual[:12]}…, the entry recorded {payload_sha[:12]}…",
            )
        ]
    return []


def _check_head(
    rows: Sequence[Row], head: tuple[int, str] | None, previous: str
) -> list[AuditProblem]:
    """The task index remembers the last seq and hash: a truncated tail shows here."""
    if head is None:
        return []
    last_seq, head_hash = head
    found = rows[-1][0] if rows else 0
    if found != last_seq or previous != head_hash:
        return [
            AuditProblem(
                seq=min(found + 1, last_seq) if found < last_seq else found,
                problem="head_mismatch",
                detail=f"the task index records {last_seq} entries ending in {head_hash[:12]}…; "
                f"the log ends at seq {found}",
            )
        ]
    return []
