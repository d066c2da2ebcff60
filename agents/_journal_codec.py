"""How journal entries become bytes: payload encoding and the hash chain's canonical form."""

from __future__ import annotations

import hashlib
import json

from agents._journal_models import DECISION_ADAPTER, DECISION_KINDS, JournalPayload
from protocols import Envelope


def payload_kind(payload: JournalPayload) -> str:
    """The entry kind a payload must be journaled under."""
    if isinstance(payload, Envelope):
        return payload.payload.type
    return payload.type


def encode_payload(payload: JournalPayload) -> bytes:
    """The stored bytes of a payload (pydantic's JSON, in field order: deterministic)."""
    if isinstance(payload, Envelope):
        return payload.model_dump_json().encode()
    return DECISION_ADAPTER.dump_json(payload)


def decode_payload(kind: str, data: bytes | str) -> JournalPayload:
    """Parses stored payload bytes back into the model for ``kind``."""
    if kind in DECISION_KINDS:
        return DECISION_ADAPTER.validate_json(data)
    return Envelope.model_validate_json(data)


def canonical_entry(task_id: str, seq: int, kind: str, at: str, payload_sha: str) -> bytes:
    """The bytes an entry's hash covers (the payload through its sha256)."""
    fields = {"at": at, "kind": kind, "payload_sha256": payload_sha, "seq": seq, "task": task_id}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def chain_hash(previous_hash: str, canonical: bytes) -> str:
    """``sha256(previous_hash + canonical entry bytes)`` as hex."""
    return hashlib.sha256(previous_hash.encode() + canonical).hexdigest()
