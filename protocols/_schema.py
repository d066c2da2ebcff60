"""JSON Schemas of every message, and the check that keeps a major version backward compatible.

Within one major schema version a change may add message types and optional fields. It may not
remove a message type or a field, make a new field required, or change a field's type: a
consumer of an older minor version could no longer read what it used to. ``schema_breaks``
lists such changes between a committed snapshot and the code.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from pydantic import BaseModel

from protocols.messages import SCHEMA_VERSION, AnyMessage, Envelope

_IGNORED = {"description", "title", "default", "examples"}


def message_schemas() -> dict[str, Any]:
    """``{"schema_version", "envelope", "messages": {type: JSON Schema}}`` for every message."""
    union = get_args(get_args(AnyMessage)[0])
    messages: dict[str, Any] = {}
    for model in union:
        assert issubclass(model, BaseModel)
        kind = model.model_fields["type"].default
        messages[kind] = model.model_json_schema()
    return {
        "schema_version": SCHEMA_VERSION,
        "envelope": Envelope.model_json_schema(),
        "messages": dict(sorted(messages.items())),
    }


def schema_breaks(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Breaking changes from ``old`` to ``new`` (both from ``message_schemas``); [] if none."""
    breaks: list[str] = []
    for kind, old_schema in old["messages"].items():
        if kind not in new["messages"]:
            breaks.append(f"message type {kind!r} was removed")
            continue
        breaks += _model_breaks(kind, old_schema, new["messages"][kind])
    breaks += _model_breaks("envelope", old["envelope"], new["envelope"])
    return breaks


def _model_breaks(where: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Compares a model and every nested model it defines."""
    breaks = _object_breaks(where, old, new)
    old_defs, new_defs = old.get("$defs", {}), new.get("$defs", {})
    for name, old_def in old_defs.items():
        if name not in new_defs:
            breaks.append(f"{where}: nested model {name} was removed")
        else:
            breaks += _object_breaks(f"{where}/{name}", old_def, new_defs[name])
    return breaks


def _object_breaks(where: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    breaks = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for field, old_field in old_props.items():
        if field not in new_props:
            breaks.append(f"{where}.{field} was removed")
        elif _shape(old_field) != _shape(new_props[field]):
            breaks.append(
                f"{where}.{field} changed type: {_describe(old_field)} -> "
                f"{_describe(new_props[field])}"
            )
        else:
            breaks += _enum_breaks(f"{where}.{field}", old_field, new_props[field])
    for field in set(new.get("required", [])) - set(old.get("required", [])):
        breaks.append(f"{where}.{field} is newly required")
    return sorted(breaks)


def _shape(schema: Any) -> Any:
    """The parts of a schema that decide which values are of the right type."""
    if isinstance(schema, dict):
        kept = {
            k: _shape(v)
            for k, v in schema.items()
            if k in {"type", "$ref", "items", "anyOf", "oneOf", "allOf", "prefixItems"}
        }
        if "const" in schema:
            kept["const"] = schema["const"]
        return kept
    if isinstance(schema, list):
        return [_shape(s) for s in schema]
    return schema


def _enum_breaks(where: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    removed = set(map(json.dumps, old.get("enum", []))) - set(map(json.dumps, new.get("enum", [])))
    if "enum" in old and removed:
        return [f"{where} no longer accepts {', '.join(sorted(removed))}"]
    return []


def _describe(schema: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in _shape(schema).items() if k not in _IGNORED})
