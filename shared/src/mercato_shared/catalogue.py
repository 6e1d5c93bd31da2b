"""The event catalogue: JSON Schemas generated from the payload models, and the rules that
keep a change backward compatible.

Compatible (same version): new optional fields, new enum values. Breaking (needs a new
version of the event type): removing a field, making a field required, changing its type.
"""

from __future__ import annotations

import json
from typing import Any

from mercato_shared.events import CATALOGUE, TOPICS, Envelope

Schema = dict[str, Any]


def build() -> dict[str, Any]:
    """The whole catalogue as one JSON document (stable key order, so diffs stay small)."""
    events: dict[str, Any] = {}
    for (event_type, version), model in sorted(CATALOGUE.items()):
        events[f"{event_type}/v{version}"] = {
            "type": event_type,
            "version": version,
            "topic": model.topic,
            "key": "order_id",
            "description": (model.__doc__ or "").strip(),
            "payload": model.model_json_schema(),
        }
    return {
        "title": "Mercato events",
        "topics": list(TOPICS),
        "envelope": Envelope.model_json_schema(),
        "events": events,
    }


def render(catalogue: dict[str, Any]) -> str:
    return json.dumps(catalogue, indent=2, sort_keys=True) + "\n"


def _resolve(schema: Schema, root: Schema) -> Schema:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: Schema = root.get("$defs", {})[ref.removeprefix("#/$defs/")]
        return resolved
    return schema


def _types(schema: Schema, root: Schema) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_types(option, root) for option in schema["anyOf"]))
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else {"object" if "properties" in schema else "any"}


def _compare(old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str) -> list[str]:
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    if not _types(old, old_root) <= _types(new, new_root):
        problems.append(f"{path}: type changed from {sorted(_types(old, old_root))}")
    if "enum" in old and not set(old["enum"]) <= set(new.get("enum") or old["enum"]):
        problems.append(f"{path}: enum values removed")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{path}.{name}: removed")
        else:
            problems += _compare(
                old_props[name], new_props[name], old_root, new_root, f"{path}.{name}"
            )
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        problems.append(f"{path}.{name}: became required")
    if "items" in old and "items" in new:
        problems += _compare(old["items"], new["items"], old_root, new_root, f"{path}[]")
    return problems


def incompatibilities(published: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Why ``current`` would break consumers of ``published`` (empty when it would not)."""
    problems: list[str] = []
    for name, old in published["events"].items():
        new = current["events"].get(name)
        if new is None:
            problems.append(f"{name}: removed (keep publishing it or its consumers break)")
            continue
        if new["topic"] != old["topic"]:
            problems.append(f"{name}: moved from topic {old['topic']} to {new['topic']}")
        problems += _compare(old["payload"], new["payload"], old["payload"], new["payload"], name)
    return problems
