"""Schema evolution: the committed v1 snapshot may only grow, and 1.0 messages still parse."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from protocols import Envelope, MessageValidationError, message_schemas, schema_breaks

DATA = Path(__file__).parent / "data"


def _snapshot() -> dict[str, Any]:
    text = resources.files("protocols").joinpath("schema", "v1.json").read_text()
    return dict(json.loads(text))


def test_code_has_no_breaking_change_against_the_v1_snapshot() -> None:
    breaks = schema_breaks(_snapshot(), message_schemas())
    assert breaks == [], (
        "breaking schema change within major version 1 (add fields as optional instead, or "
        f"start version 2): {breaks}"
    )


def test_every_message_type_is_in_the_snapshot_or_added_since() -> None:
    snapshot = _snapshot()
    assert set(snapshot["messages"]) <= set(message_schemas()["messages"])


def test_messages_written_at_1_0_still_parse() -> None:
    envelopes = json.loads((DATA / "envelopes_v1_0.json").read_text())
    assert len(envelopes) >= 10
    kinds = {Envelope.model_validate(e).payload.type for e in envelopes}
    assert "task.submitted" in kinds and "approval.decided" in kinds


def test_another_major_version_is_refused_clearly() -> None:
    envelope = json.loads((DATA / "envelopes_v1_0.json").read_text())[0]
    envelope["schema_version"] = "2.0"
    with pytest.raises(ValueError, match=r"schema version 2\.0 is not readable by this build"):
        Envelope.model_validate(envelope)


def _breaks_after(change: Any) -> list[str]:
    new = copy.deepcopy(_snapshot())
    change(new)
    return schema_breaks(_snapshot(), new)


def test_a_removed_field_is_a_break() -> None:
    def drop(new: dict[str, Any]) -> None:
        del new["messages"]["task.submitted"]["properties"]["goal"]

    assert "task.submitted.goal was removed" in _breaks_after(drop)


def test_a_new_required_field_is_a_break() -> None:
    def require(new: dict[str, Any]) -> None:
        schema = new["messages"]["step.result"]
        schema["properties"]["cost"] = {"type": "number"}
        schema["required"].append("cost")

    assert "step.result.cost is newly required" in _breaks_after(require)


def test_a_changed_type_is_a_break() -> None:
    def retype(new: dict[str, Any]) -> None:
        new["messages"]["step.result"]["properties"]["ok"] = {"type": "string"}

    (found,) = _breaks_after(retype)
    assert found.startswith("step.result.ok changed type")


def test_a_removed_message_type_and_enum_value_are_breaks() -> None:
    def shrink(new: dict[str, Any]) -> None:
        del new["messages"]["control.heartbeat"]
        new["messages"]["plan.proposed"]["properties"]["source"]["enum"] = ["model", "memory"]

    found = _breaks_after(shrink)
    assert "message type 'control.heartbeat' was removed" in found
    assert 'plan.proposed.source no longer accepts "fallback"' in found


def test_an_added_optional_field_is_not_a_break() -> None:
    def grow(new: dict[str, Any]) -> None:
        new["messages"]["step.result"]["properties"]["cost"] = {"type": "number"}

    assert _breaks_after(grow) == []


def test_parse_errors_stay_message_validation_errors() -> None:
    with pytest.raises(MessageValidationError):
        from protocols import parse_message

        parse_message({"type": "control.cancel", "task_id": ""})
